//! One apply at a time per stack: a lock file in the state directory that
//! names its holder. A lock whose holder process is gone is stale: it is
//! reported and replaced.

use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Lock {
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Holder {
    pid: u32,
    host: String,
    command: String,
    since: u64,
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Lock {
    /// Take the lock of `stack` in `state_dir`, or say who holds it.
    pub fn acquire(state_dir: &Path, stack: &str, command: &str) -> Result<Lock, String> {
        let dir = state_dir.join(stack);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("lock");
        let holder = Holder {
            pid: std::process::id(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            command: command.to_string(),
            since: now(),
        };
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(serde_json::to_string(&holder).expect("json").as_bytes())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    return Ok(Lock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match serde_json::from_str::<Holder>(&text) {
                        Ok(h) if alive(h.pid) && h.pid != holder.pid => {
                            return Err(format!(
                                "stack `{stack}` is locked by `{}` (pid {} on {}, for {}s); wait for it to finish",
                                h.command,
                                h.pid,
                                h.host,
                                now().saturating_sub(h.since)
                            ));
                        }
                        Ok(h) => {
                            tracing::warn!(
                                "removing a stale lock of stack `{stack}`: pid {} (`{}`) is gone",
                                h.pid,
                                h.command
                            );
                            eprintln!(
                                "warning: removing a stale lock of stack `{stack}`: pid {} (`{}`) is gone",
                                h.pid, h.command
                            );
                        }
                        Err(_) => {
                            eprintln!(
                                "warning: removing an unreadable lock file {}",
                                path.display()
                            );
                        }
                    }
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(format!("cannot take the lock {}", path.display()))
    }
}

/// Who holds the lock of `stack`, when a live process does.
pub fn holder(state_dir: &Path, stack: &str) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(stack).join("lock")).ok()?;
    let h: Holder = serde_json::from_str(&text).ok()?;
    alive(h.pid).then(|| format!("`{}` (pid {} on {})", h.command, h.pid, h.host))
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
