//! The real `ocx-server` binary as a child process: started on an ephemeral loopback port,
//! its address read from its log, killed on drop, or stopped by SIGTERM.
//!
//! Cargo tells only the server crate's own tests where the binary is
//! (`env!("CARGO_BIN_EXE_ocx-server")`), so they name it: [`ServerBinary`].

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A server process, killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of the `ocx-server` binary to run.
#[derive(Debug, Clone, Copy)]
pub struct ServerBinary(pub &'static str);

impl ServerBinary {
    /// Starts the binary on an ephemeral loopback port; returns it and its address, read from the
    /// "serving" log line (the binary logs the address it actually bound).
    pub fn start(self, data_dir: &Path, demo: bool) -> (Proc, String) {
        let (proc, endpoint, _) = self.start_logged(data_dir, demo, "info");
        (proc, endpoint)
    }

    /// [`start`] with `RUST_LOG=rust_log`, keeping every log line: the returned thread ends when
    /// the process does, and returns them all.
    pub fn start_logged(
        self,
        data_dir: &Path,
        demo: bool,
        rust_log: &str,
    ) -> (Proc, String, std::thread::JoinHandle<Vec<String>>) {
        let demo: &[&str] = if demo { &["--demo"] } else { &[] };
        self.start_configured(data_dir, demo, &[("RUST_LOG", rust_log)])
    }

    /// [`start_logged`] with more flags and environment variables.
    pub fn start_configured(
        self,
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Proc, String, std::thread::JoinHandle<Vec<String>>) {
        let (proc, endpoint, _, mut seen, lines) = self.spawn(&[], data_dir, args, envs, false);
        // Keep draining the log so the server never blocks on a full pipe.
        let drain = std::thread::spawn(move || {
            seen.extend(lines.map_while(Result::ok));
            seen
        });
        (proc, endpoint, drain)
    }

    /// [`start_configured`] with metrics served on an ephemeral loopback port
    /// (`--metrics-listen 127.0.0.1:0`); also returns the metrics address, read from the
    /// server's "metrics" log line.
    pub fn start_with_metrics(
        self,
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Proc, String, String, std::thread::JoinHandle<Vec<String>>) {
        let mut with = vec!["--metrics-listen", "127.0.0.1:0"];
        with.extend_from_slice(args);
        let (proc, endpoint, metrics, mut seen, lines) =
            self.spawn(&[], data_dir, &with, envs, true);
        let drain = std::thread::spawn(move || {
            seen.extend(lines.map_while(Result::ok));
            seen
        });
        (proc, endpoint, metrics.unwrap_or_default(), drain)
    }

    /// [`start_configured`] run through `wrapper` (e.g. `["prlimit", "--nofile=128:128", "--"]`,
    /// which execs the server, so the process id is the server's; empty: none), with every log
    /// line, from the first, sent to the returned channel as it is written: a test waits for a
    /// line with [`wait_for_line`].
    pub fn start_watched(
        self,
        wrapper: &[&str],
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> (Proc, String, std::sync::mpsc::Receiver<String>) {
        let (proc, endpoint, _, seen, lines) = self.spawn(wrapper, data_dir, args, envs, false);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Sends fail once the test dropped the receiver; the pipe is drained regardless.
            for line in seen.into_iter().chain(lines.map_while(Result::ok)) {
                let _ = tx.send(line);
            }
        });
        (proc, endpoint, rx)
    }

    /// Starts the binary (through `wrapper`, if any) and reads its log until it serves (and,
    /// with `metrics`, until it serves its metrics too): the process, its endpoint, the metrics
    /// address if asked for, the lines read so far and the rest of the log.
    #[allow(clippy::type_complexity)]
    fn spawn(
        self,
        wrapper: &[&str],
        data_dir: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        metrics: bool,
    ) -> (
        Proc,
        String,
        Option<String>,
        Vec<String>,
        std::io::Lines<BufReader<std::process::ChildStdout>>,
    ) {
        let mut cmd = match wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut cmd = Command::new(program);
                cmd.args(wrapper_args).arg(self.0);
                cmd
            }
            None => Command::new(self.0),
        };
        cmd.args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("RUST_LOG", "info");
        for (name, value) in envs {
            cmd.env(name, value);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ocx-server");
        let stdout = child.stdout.take().expect("stdout");
        let proc = Proc(child);
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        // Text logs say `addr=127.0.0.1:1234`; JSON logs `"addr":"127.0.0.1:1234"`.
        let address = |line: &str| {
            if let Some(rest) = line.split("addr=").nth(1) {
                return rest.split_whitespace().next().map(str::to_owned);
            }
            let rest = line.split("\"addr\":\"").nth(1)?;
            rest.split('"').next().map(str::to_owned)
        };
        let mut addr = None;
        let mut metrics_addr = None;
        while addr.is_none() || (metrics && metrics_addr.is_none()) {
            let line = lines
                .next()
                .expect("server exited before serving")
                .expect("read log");
            seen.push(line.clone());
            if line.contains("serving") {
                addr = address(&line);
            } else if line.contains("metrics") {
                metrics_addr = address(&line);
            }
        }
        let addr = addr.expect("address");
        (proc, format!("http://{addr}"), metrics_addr, seen, lines)
    }
}

/// The first log line from `lines` that satisfies `wanted`, waiting at most `bound` for it;
/// `None` if none came in time (or the log ended).
pub fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    bound: std::time::Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let until = std::time::Instant::now() + bound;
    loop {
        let left = until.checked_duration_since(std::time::Instant::now())?;
        match lines.recv_timeout(left) {
            Ok(line) if wanted(&line) => return Some(line),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// The key in a key file the server wrote (`platform.key`, `demo-carrier.key`).
pub fn key(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("key file")
        .trim()
        .to_owned()
}

/// Sends SIGTERM to the server and waits (at most `bound`) for it to exit by itself; its exit
/// status and how long it took.
pub async fn sigterm_and_wait(
    server: Proc,
    bound: std::time::Duration,
) -> (std::process::ExitStatus, std::time::Duration) {
    let signalled = std::time::Instant::now();
    let pid = server.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let mut server = server;
    let status = tokio::time::timeout(bound, tokio::task::spawn_blocking(move || server.0.wait()))
        .await
        .expect("the process exits by itself")
        .expect("join")
        .expect("exit status");
    (status, signalled.elapsed())
}
