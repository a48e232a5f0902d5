//! The real Docker (Debian's `docker.io`): a container port published with `-p` is closed to
//! strangers, opens for the knocking source only, survives `docker restart` and a restart of
//! the Docker daemon (which rewrites its own chains), and stays closed to strangers when
//! nfknock stops.
//!
//! `dockerd` runs in the lab's server namespace (`nsenter --net`, then a private mount
//! namespace), with its own data root, exec root, pid file, socket and cgroup parent under the
//! lab: its iptables-nft rules land in the lab's netfilter, its mounts vanish with it, and the
//! host's Docker (if any) is never touched. No registry: the image is `docker import`ed from a
//! directory holding `busybox-static`'s binary. If Docker cannot start, the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use super::*;

/// The port Docker publishes (the lab's own DNAT uses 8080).
const DOCKER_PORT: u16 = 8081;
const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client by its path: another `docker` may come first in PATH.
const DOCKER: &str = "/usr/bin/docker";
const IMAGE: &str = "nfk-busybox:e2e";

/// A `dockerd` of the lab's server namespace; stopped, and everything it made removed, on drop.
struct Dockerd {
    ns: String,
    dir: PathBuf,
    cgroup: String,
    child: Option<Child>,
}

impl Dockerd {
    fn start(lab: &Lab) -> Dockerd {
        let dir = lab.path("docker");
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Dockerd {
            ns: lab.srv.clone(),
            cgroup: format!("nfknock-e2e-{}", lab.name),
            dir,
            child: None,
        };
        d.spawn();
        d
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    fn spawn(&mut self) {
        assert!(
            Path::new(DOCKERD).exists(),
            "{DOCKERD} is missing: install Debian's docker.io (scripts/common.sh nfk_install_deps)"
        );
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .unwrap();
        let d = &self.dir;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .args(["--", "unshare", "--mount", "--propagation", "slave", "--"])
            .arg(DOCKERD)
            .arg(format!("--data-root={}", d.join("data").display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", self.sock().display()))
            // cgroupfs, said explicitly: under a systemd host with cgroup v2 Docker would pick
            // the systemd driver, which wants a slice name and leaves units behind.
            .args(["--exec-opt", "native.cgroupdriver=cgroupfs"])
            .arg(format!("--cgroup-parent=/{}", self.cgroup))
            .args(["--userland-proxy=false", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {DOCKERD} (nsenter, unshare): {e}"));
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(60), || {
            self.docker(&["info", "--format", "{{.ServerVersion}}"])
                .status
                .success()
                || self.exited()
        });
        assert!(
            up.is_some() && !self.exited(),
            "dockerd did not start in {}: the Docker test cannot run here.\n{}",
            self.ns,
            self.log()
        );
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg(format!("--host=unix://{}", self.sock().display()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{DOCKER}: {e}"))
    }

    fn must(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGTERM and wait (dockerd stops its containers on the way out).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let gone = wait_until(Duration::from_secs(20), || {
                c.try_wait().ok().flatten().is_some()
            });
            if gone.is_none() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.docker(&["rm", "-f", "web"]);
        }
        self.stop();
        // The cgroups the containers had (cgroup v1: one per hierarchy; v2: one), now empty.
        if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in dirs.flatten() {
                let _ = std::fs::remove_dir(h.path().join(&self.cgroup));
            }
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.cgroup));
        if std::thread::panicking() {
            eprintln!("--- dockerd log ---\n{}", self.log());
        }
    }
}

/// A root with busybox-static's binary and a page, imported as [`IMAGE`].
fn import_busybox_image(lab: &Lab, docker: &Dockerd) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox is missing: install Debian's busybox-static (scripts/common.sh)");
    let root = lab.path("image-root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::fs::write(root.join("www/index.html"), "nfknock e2e\n").unwrap();
    let tar = lab.path("image.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    docker.must(&["import", tar.to_str().unwrap(), IMAGE]);
}

fn run_web(docker: &Dockerd) {
    docker.must(&[
        "run",
        "-d",
        "--name",
        "web",
        "--restart",
        "always",
        "-p",
        &format!("{DOCKER_PORT}:80"),
        IMAGE,
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
}

#[test]
fn a_docker_published_port_opens_for_the_knocker_only_across_docker_restarts() {
    let mut lab = Lab::new();
    let key = lab.keygen("alice.key");
    lab.write_config_raw(
        &format!("protect = [\"tcp/{DOCKER_PORT}\"]\nmax_age = 120\n"),
        &alice(&key, &format!("\"tcp/{DOCKER_PORT}\""), 600),
    );
    let mut docker = Dockerd::start(&lab);
    import_busybox_image(&lab, &docker);
    run_web(&docker);
    let from_cli = sock(SRV4, DOCKER_PORT);
    let from_oth = sock(SRV_OTH4, DOCKER_PORT);
    // Without nfknock the published port answers everyone: the test's probe works.
    assert!(
        opens(&lab.oth, from_oth),
        "the published port does not answer at all (Docker's DNAT):\n{}",
        nft_out(&lab, &["list", "ruleset"])
    );

    lab.start_daemon();
    let closed = |ns: &str, to| !tcp_open(ns, to, CLOSED_WITHIN);
    assert!(closed(&lab.cli, from_cli), "open before the knock");
    assert!(closed(&lab.oth, from_oth), "open to a stranger");

    lab.knock(
        &lab.cli,
        SRV4,
        &[
            "--key-file",
            key.to_str().unwrap(),
            "--access",
            &format!("tcp/{DOCKER_PORT}"),
        ],
    );
    assert!(
        opens(&lab.cli, from_cli),
        "the knock opened nothing:\n{}",
        lab.log()
    );
    assert!(
        closed(&lab.oth, from_oth),
        "the knock opened it to a stranger"
    );

    docker.must(&["restart", "web"]);
    assert!(
        opens(&lab.cli, from_cli),
        "closed to the knocker after `docker restart`"
    );
    assert!(
        closed(&lab.oth, from_oth),
        "open to a stranger after `docker restart`"
    );

    // A Docker daemon restart rewrites its chains (and restarts the container).
    docker.stop();
    docker.spawn();
    assert!(
        wait_until(Duration::from_secs(20), || tcp_open(
            &lab.cli, from_cli, PROBE
        ))
        .is_some(),
        "closed to the knocker after a Docker daemon restart:\n{}",
        docker.must(&["ps", "-a"])
    );
    assert!(
        closed(&lab.oth, from_oth),
        "open to a stranger after a Docker daemon restart"
    );

    // nfknock stops: the gate stays, strangers stay out (also across another Docker restart).
    let (_, status) = lab.stop_daemon();
    assert!(status.success());
    assert!(
        closed(&lab.oth, from_oth),
        "open to a stranger once nfknock stopped"
    );
    docker.must(&["restart", "web"]);
    assert!(
        wait_until(Duration::from_secs(10), || tcp_open(
            &lab.cli, from_cli, PROBE
        ))
        .is_some(),
        "the container did not come back"
    );
    assert!(
        closed(&lab.oth, from_oth),
        "open to a stranger after nfknock stopped and the container restarted"
    );
}
