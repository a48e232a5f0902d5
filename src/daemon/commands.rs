#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandUser, GrantMode, Template};

    fn client(on_grant: &[&str]) -> ClientEntry {
        let mut c = crate::policy::tests::client();
        let t = |a: &[&str]| {
            Template::parse(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
        };
        c.commands.grant = GrantMode::Command;
        c.commands.cycle.on_grant = Some(t(on_grant));
        c.commands.cycle.on_expire = Some(t(&["/usr/sbin/ipset", "del", "wl", "$SRC"]));
        c.commands.user = Some(CommandUser {
            account: crate::config::Account {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
            },
            timeout_secs: 5,
            net_admin: true,
        });
        c
    }

    fn grant(ttl: u32) -> policy::Grant {
        policy::Grant {
            addr: "192.0.2.7".parse().unwrap(),
            access: vec!["tcp/22".parse().unwrap(), "udp/53".parse().unwrap()],
            ttl,
        }
    }

    fn on_disk(dir: &std::path::Path) -> String {
        std::fs::read_to_string(dir.join(crate::command::pending::FILE)).unwrap_or_default()
    }

    /// Each granted access gets its close on disk when the burst ends (before its on_grant is
    /// handed over), and the tick takes it off once due.
    #[test]
    fn closes_are_on_disk_before_the_open_and_leave_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Commands::new(None, Pending::open(dir.path()).unwrap(), true);
        c.grant(
            &client(&["/usr/sbin/ipset", "add", "wl", "$SRC"]),
            &grant(5),
            None,
            100,
        );
        assert_eq!(c.jobs.len(), 2);
        assert_eq!(
            on_disk(dir.path()),
            "",
            "nothing written before the burst ends"
        );
        c.flush();
        assert!(c.jobs.is_empty());
        let text = on_disk(dir.path());
        assert!(
            text.contains("105 alice 192.0.2.7 tcp 22 5 -")
                && text.contains("105 alice 192.0.2.7 udp 53 5 -"),
            "{text}"
        );
        c.tick(104);
        assert_eq!(on_disk(dir.path()).lines().count(), 3);
        c.tick(105);
        assert_eq!(
            on_disk(dir.path()).lines().count(),
            1,
            "only the header is left"
        );
    }

    /// A user name that cannot be an argument stops the cycle before anything is kept or run;
    /// without $USER in the templates the name does not matter.
    #[test]
    fn a_user_name_that_cannot_be_an_argument_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Commands::new(None, Pending::open(dir.path()).unwrap(), true);
        let with_user = client(&["/usr/bin/logger", "$USER"]);
        c.grant(&with_user, &grant(5), Some("-rf"), 100);
        assert!(c.jobs.is_empty() && c.pending.is_empty());
        c.grant(&with_user, &grant(5), Some("bob"), 100);
        assert_eq!(c.jobs.len(), 2);
        let without = client(&["/usr/bin/logger", "$SRC"]);
        let mut d = Commands::new(None, Pending::open(dir.path()).unwrap(), true);
        d.grant(&without, &grant(5), Some("-rf"), 100);
        assert_eq!(d.jobs.len(), 2);
    }

    /// Without a runner (not a dry run), due closes stay on disk for the next start.
    #[test]
    fn without_a_runner_closes_wait_for_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Commands::new(None, Pending::open(dir.path()).unwrap(), false);
        c.grant(&client(&["/bin/true"]), &grant(5), None, 100);
        c.flush();
        c.tick(1_000);
        assert_eq!(Pending::open(dir.path()).unwrap().len(), 2);
    }
}
