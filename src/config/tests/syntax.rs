//! TOML mistakes: lines, structure, and never a panic on any input.

use super::*;

#[test]
fn syntax_errors_have_lines() {
    let ps = problems("[server]\nport = 62201\nqueue = \n");
    assert_eq!(ps[0].line, Some(3));
    assert!(
        ps[0].message.contains("TOML syntax error"),
        "{}",
        ps[0].message
    );
    let ps = problems("[server]\nport = 1\nport = 2\n");
    assert_eq!(ps[0].line, Some(3), "{}", ConfigErrors(ps.clone()));
}

/// Regression (fuzz target `config_server`, docs/FUZZING.md): random text has a syntax error
/// every few bytes; reporting each one, with its line counted from the start of the file, took
/// seconds for 100 KB and grew the problem list to many times the file size.
#[test]
fn fuzz_many_syntax_errors_are_capped_and_lines_stay_right() {
    let text = "= x\n".repeat(1000);
    let ps = problems(&text);
    assert_eq!(
        ps.len(),
        raw::MAX_SYNTAX_ERRORS + 1,
        "{}",
        ConfigErrors(ps.clone())
    );
    // Each `= x` line holds up to three errors: the first 20 cover lines 1..=7.
    let lines: Vec<_> = ps.iter().map(|p| p.line.unwrap_or(0)).collect();
    assert!(
        lines.windows(2).all(|w| w[0] <= w[1] && w[1] - w[0] <= 1),
        "{lines:?}"
    );
    assert_eq!(
        (lines[0], lines[raw::MAX_SYNTAX_ERRORS - 1]),
        (1, 7),
        "{lines:?}"
    );
    let last = &ps[raw::MAX_SYNTAX_ERRORS].message;
    assert!(last.contains("more TOML syntax errors"), "{last}");
    // Lines asked out of order (stage 2 may go back) are still counted right.
    let sink = raw::Sink::new("a\nb\nc\n", Path::new("x.toml"));
    assert_eq!(
        [sink.line(4), sink.line(0), sink.line(2), sink.line(99)],
        [3, 1, 2, 4]
    );
}

#[test]
fn structure_mistakes_say_how_to_write_it() {
    let ps = problems(&native_client("").replace("[[client]]", "[client]"));
    assert!(at(&ps, "client")
        .message
        .contains("`[[client]]` (two brackets)"));
    let ps = problems("server = 5\n[[client]]\n");
    assert!(at(&ps, "server").message.contains("`[server]`"));
    let ps = problems("");
    assert!(at(&ps, "client")
        .message
        .contains("no client is configured"));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Deep nesting must not exhaust the stack (the parser has a depth limit).
    #[test]
    fn on_deep_nesting() {
        for open in ["[", "{a="] {
            let text = format!("a = {}", open.repeat(100_000));
            assert!(parse_str(&text, Path::new(PATH)).is_err());
        }
        let text = format!("[a{}]\n", ".a".repeat(50_000));
        assert!(parse_str(&text, Path::new(PATH)).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn on_any_text(text in "(?s).{0,400}") {
            let _ = parse_str(&text, Path::new("/nonexistent/nfknock.toml"));
            let _ = parse_knock_profiles(&text, Path::new("/nonexistent/client.toml"));
        }

        /// Text made of the config's own vocabulary reaches stage 2.
        #[test]
        fn on_config_shaped_text(lines in prop::collection::vec(
            prop::sample::select(vec![
                "[server]", "[[client]]", "[client.fwknop]", "[default]", "[server.home]", "[client]",
                "port = 0", "port = 62201", "port = \"x\"", "queue = 70000", "max_age = -1",
                "protect = [\"tcp/22\"]", "protect = []", "state_dir = \"rel\"",
                "name = \"alice\"", "name = \"\"", "key = \"AAAA\"", "key_file = \"nope\"",
                "allow = [\"tcp/22\", \"udp/0\"]", "allow = []", "deny = [1]", "timeout = 99999999999",
                "max_timeout = 5", "sources = [\"10.0.0.1/8\", \"::/0\"]", "destinations = \"x\"",
                "require_username = \"bob\"", "expires = 2027-02-29", "expires = \"2027-01-31\"",
                "expires_at = -9223372036854775808", "key_base64 = \"AAAA\"", "hmac_key = \"AAAA\"",
                "hmac = \"md5\"", "mode = \"legacy\"", "no_hmac = true", "server = \"-bad-\"",
                "access = [\"tcp/22\"]", "allow_ip = \"::\"", "x = { y = [1, {z = 2}] }", "= =",
            ]),
            0..24,
        )) {
            let text = lines.join("\n");
            let _ = check_str(&text, Path::new("/nonexistent/nfknock.toml"));
            let env = KnockEnv { files: &MemFiles::new(), euid: 0, home: None };
            let _ = knock_profile::check_client(&text, Path::new("/nonexistent/client.toml"), &env);
        }
    }
}
