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

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self
            .child
            .as_ref()
            .ok_or("the process is not running")?
            .id();
        // An exited child not yet reaped still takes signals: pausing it
        // would "succeed" and leave nothing to pause.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = state
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
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
            .then_some(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_process_is_not_signalled() {
        let log = std::env::temp_dir().join(format!("lease-test-true-{}.log", std::process::id()));
        let mut process = LocalProcess::spawn("true", Vec::new(), log.clone()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let refused = process.signal("STOP").unwrap_err();
        assert!(refused.contains("has exited"), "{refused}");
        assert!(process.check_alive().is_err());
        let _ = std::fs::remove_file(log);
    }
}
