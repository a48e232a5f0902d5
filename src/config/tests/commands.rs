//! The command keys of a `[[client]]` and `[server] max_commands`: each mistake is reported
//! at its line with what to do.

use super::*;
use crate::command::GrantMode;

const IPSET_OPEN: &str = "on_grant = [\"/usr/sbin/ipset\", \"add\", \"whitelist\", \"$SRC\", \"timeout\", \"$CLIENT_TIMEOUT\", \"-exist\"]\n";

#[test]
fn a_command_cycle_is_read_with_its_user_and_timeout() {
    let text = native_client(&format!(
        "grant = \"command\"\n{IPSET_OPEN}on_expire = [\"/usr/sbin/ipset\", \"del\", \"whitelist\", \"$SRC\"]\ncommand_user = \"nobody\"\ncommand_timeout = 10\ncommand_net_admin = true\n"
    ));
    let p = plan(&format!("[server]\nmax_commands = 2\n{text}"));
    let c = &p.clients[0].commands;
    assert_eq!(c.grant, GrantMode::Command);
    assert_eq!(c.cycle.on_grant.as_ref().unwrap().source[3], "$SRC");
    let u = c.user.as_ref().unwrap();
    assert_eq!(
        (u.account.name.as_str(), u.timeout_secs, u.net_admin),
        ("nobody", 10, true)
    );
    assert_eq!(p.server.max_commands, 2);
    // A command-only client's ports are not the nft gate's: `protect` leaves them out.
    assert!(p.server.protect.is_empty());
}

#[test]
fn each_command_mistake_is_named_at_its_line() {
    // Lines 1-4 are the client header; on_grant is line 6, on_expire line 7.
    let text = native_client(
        "grant = \"both\"\non_grant = [\"/usr/bin/logger\", \"$SOURCE\"]\non_expire = [\"logger\", \"$SRC\"]\ncommand_user = \"root\"\n",
    );
    let ps = problems(&text);
    let p = at(&ps, "client[1].on_grant");
    assert_eq!(p.line, Some(6), "{p}");
    assert!(p.message.contains("argument 2: `$SOURCE` is not a known variable; use one of $SRC $IP $PORT $PROTO $CLIENT_TIMEOUT $USER"), "{p}");
    let p = at(&ps, "client[1].on_expire");
    assert_eq!(p.line, Some(7));
    assert!(
        p.message.contains("`logger` is not an absolute path"),
        "{p}"
    );
    let p = at(&ps, "client[1].command_user");
    assert!(
        p.message
            .contains("`root` is root; commands run unprivileged"),
        "{p}"
    );

    let ps = problems(&native_client(
        "grant = \"command\"\ncommand_user = \"nobody\"\n",
    ));
    assert!(at(&ps, "client[1].grant")
        .message
        .contains("has no `on_grant`"));
    let ps = problems(&native_client(&format!(
        "{IPSET_OPEN}command_user = \"nobody\"\n"
    )));
    assert!(at(&ps, "client[1].grant")
        .message
        .contains("set `grant = \"command\"`"));
    let ps = problems(&native_client(&format!("grant = \"both\"\n{IPSET_OPEN}")));
    assert!(at(&ps, "client[1].command_user")
        .message
        .contains("has no `command_user`"));
    let ps = problems(&native_client(&format!(
        "grant = \"command\"\n{IPSET_OPEN}command_user = \"nobody\"\nnat = [{{ port = \"tcp/22\", to = \"192.168.10.2:22\" }}]\n"
    )));
    assert!(at(&ps, "client[1].nat")
        .message
        .contains("use `grant = \"both\"`"));
    let ps = problems(&native_client("grant = \"sometimes\"\n"));
    assert!(at(&ps, "client[1].grant")
        .message
        .contains("unknown variant"));
    let ps = problems(&native_client(
        "grant = \"both\"\non_grant = [\"/bin/echo\", \"$USER\"]\ncommand_user = \"nobody\"\n",
    ));
    assert!(at(&ps, "client[1].on_grant")
        .message
        .contains("uses $USER, but this client's knocks are native"));
    let ps = problems(&native_client(
        "commands = [[\"/usr/bin/id\"]]\ncommand_user = \"nobody\"\n",
    ));
    assert!(at(&ps, "client[1].commands")
        .message
        .contains("command messages are an fwknop feature"));
    let ps = problems(&format!(
        "[server]\nmax_commands = 0\n{}",
        native_client("")
    ));
    assert!(at(&ps, "server.max_commands")
        .message
        .contains("from 1 to 64"));
}

#[test]
fn command_messages_need_an_allow_list_of_absolute_argv() {
    let ok = fwknop_client(
        "bob",
        "",
    )
    .replace(
        "[client.fwknop]",
        "commands = [[\"/usr/bin/systemctl\", \"restart\", \"nginx\"]]\ncommand_prefixes = [[\"/usr/bin/touch\"]]\ncommand_user = \"nobody\"\ncommand_sudo_user = \"www-data\"\n[client.fwknop]",
    );
    let p = plan(&ok);
    let e = p.clients[0].commands.exec.as_ref().unwrap();
    assert_eq!((e.exact.len(), e.prefixes.len()), (1, 1));
    assert_eq!(e.sudo.as_ref().unwrap().user, "www-data");
    let bad = fwknop_client("bob", "").replace(
        "[client.fwknop]",
        "commands = [[\"systemctl\", \"restart\"], []]\ncommand_user = \"nobody\"\ncommand_sudo_group = \"www\"\n[client.fwknop]",
    );
    let ps = problems(&bad);
    assert!(at(&ps, "client[1].commands[1]")
        .message
        .contains("starting with an absolute path"));
    assert!(at(&ps, "client[1].commands[2]")
        .message
        .contains("starting with an absolute path"));
    assert!(at(&ps, "client[1].command_sudo_group")
        .message
        .contains("needs `command_sudo_user`"));
}

#[test]
fn command_risks_are_warned_about() {
    let text = fwknop_client("bob", "").replace(
        "[client.fwknop]",
        "grant = \"both\"\non_grant = [\"/usr/sbin/ipset\", \"add\", \"wl\", \"$SRC\"]\ncommand_user = \"nobody\"\ncommand_net_admin = true\ncommand_prefixes = [[\"/usr/bin/touch\"]]\n[client.fwknop]",
    );
    let cfg = plan(&text).build();
    let w = warnings(&cfg).join("\n");
    assert!(w.contains("client `bob`: command_net_admin = true: its commands (as `nobody`) may change any firewall rule"), "{w}");
    assert!(
        w.contains("client `bob`: command_prefixes lets a knock add arguments"),
        "{w}"
    );
}
