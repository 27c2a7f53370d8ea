//! Servers as child processes.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// A server process, killed when dropped. It can be restarted with the same
/// arguments: the same port and the same data folder.
#[derive(Debug)]
pub(crate) struct LocalProcess {
    program: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl LocalProcess {
    pub fn spawn(program: &str, args: Vec<String>, log: PathBuf) -> Result<Self, String> {
        let mut process = Self {
            program: program.to_owned(),
            args,
            child: None,
            log,
        };
        process.start()?;
        Ok(process)
    }

    fn start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open {}: {e}", self.log.display()))?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e} (is it installed?)", self.program))?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process (SIGKILL: nothing is saved on the way out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts again with the same arguments.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.start()
    }

    /// Freezes the process (SIGSTOP) and returns once every thread of it
    /// has stopped. `kill` returns as soon as the signal is queued; the
    /// threads stop as each is next scheduled, so on a busy machine a
    /// multi-threaded server (etcd) can answer requests sent after `kill`
    /// returned, for as long as one of its threads waits for a core.
    pub async fn pause(&self) -> Result<(), String> {
        let pid = self.signal("STOP")?;
        let limit = Duration::from_secs(10);
        let give_up = Instant::now() + limit;
        loop {
            match all_stopped(pid) {
                Ok(true) => return Ok(()),
                Ok(false) if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok(false) => {
                    return Err(format!(
                        "{} (pid {pid}): a thread still runs {limit:?} after SIGSTOP",
                        self.program
                    ));
                }
                Err(why) => return Err(format!("{} (pid {pid}): {why}", self.program)),
            }
        }
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) -> Result<(), String> {
        self.signal("CONT").map(|_| ())
    }

    /// Sends `signal` to the process; its pid.
    fn signal(&self, signal: &str) -> Result<u32, String> {
        let pid = self
            .child
            .as_ref()
            .ok_or("the process is not running")?
            .id();
        // An exited child not yet reaped still takes signals: pausing it
        // would "succeed" and leave nothing to pause.
        if matches!(
            thread_state(&format!("/proc/{pid}/stat")),
            None | Some('Z' | 'X')
        ) {
            return Err(format!(
                "{} (pid {pid}) has exited: kill -{signal} has nothing to act on",
                self.program
            ));
        }
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .map_err(|e| format!("kill -{signal} {pid}: {e}"))?;
        status
            .success()
            .then_some(pid)
            .ok_or_else(|| format!("kill -{signal} {pid} failed"))
    }

    /// Fails with the log's tail if the process has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(15).collect();
            let tail: Vec<_> = tail.into_iter().rev().collect();
            return Err(format!(
                "{} exited with {status}:\n{}",
                self.program,
                tail.join("\n")
            ));
        }
        Ok(())
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `probe` until it succeeds, the process dies, or `limit` passes.
pub(crate) async fn wait_ready<F, Fut>(
    process: &mut LocalProcess,
    limit: Duration,
    mut probe: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let give_up = Instant::now() + limit;
    loop {
        process.check_alive()?;
        match probe().await {
            Ok(()) => return Ok(()),
            Err(why) if Instant::now() >= give_up => {
                return Err(format!(
                    "{} not ready after {limit:?}: {why}",
                    process.program
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The state letter of the task whose `stat` file is at `path` (`R`, `S`,
/// `T` stopped, `Z` exited, …), or None when it is gone.
fn thread_state(path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

/// Whether every thread of process `pid` is stopped; an error when the
/// process has exited.
fn all_stopped(pid: u32) -> Result<bool, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("cannot read its threads: {e}"))?;
    let mut any = false;
    for task in tasks.flatten() {
        let path = task.path().join("stat");
        match thread_state(&path.to_string_lossy()) {
            Some('T' | 't') => any = true,
            Some('Z' | 'X') => return Err("it has exited".to_owned()),
            // A thread gone meanwhile has nothing left to run.
            None => {}
            Some(_) => return Ok(false),
        }
    }
    Ok(any)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_process_is_not_signalled() {
        let log = std::env::temp_dir().join(format!("lease-test-true-{}.log", std::process::id()));
        let mut process = LocalProcess::spawn("true", Vec::new(), log.clone()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let refused = process.signal("STOP").unwrap_err();
        assert!(process.resume().is_err());
        assert!(refused.contains("has exited"), "{refused}");
        assert!(process.check_alive().is_err());
        let _ = std::fs::remove_file(log);
    }

    /// A paused process has every thread stopped when `pause` returns: a
    /// busy thread of it runs no further.
    #[tokio::test]
    async fn a_paused_process_has_every_thread_stopped() {
        let log = std::env::temp_dir().join(format!("lease-test-yes-{}.log", std::process::id()));
        // A process that never sleeps: stopped only by the signal.
        let mut process = LocalProcess::spawn(
            "sh",
            vec!["-c".into(), "while :; do :; done".into()],
            log.clone(),
        )
        .unwrap();
        process.pause().await.unwrap();
        let pid = process.child.as_ref().unwrap().id();
        assert_eq!(all_stopped(pid), Ok(true));
        process.resume().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(all_stopped(pid), Ok(false), "resumed, it runs again");
        process.kill();
        let _ = std::fs::remove_file(log);
    }
}
