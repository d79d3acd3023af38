//! One apply at a time per stack: a lock file in the state directory that
//! names its holder, held with `flock(2)`. The kernel releases the lock when
//! its process ends, however it ends: a holder killed with SIGKILL leaves a
//! stale file but no lock, and the next apply reports and replaces it.
//! Whether a holder lives is never guessed from its pid, which the system
//! may have given to another process since.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Lock {
    path: PathBuf,
    /// Holds the flock; closing it releases the lock.
    _file: File,
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Holder {
    pid: u32,
    host: String,
    command: String,
    since: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The file's text, from the start.
fn text(f: &mut File) -> String {
    let mut text = String::new();
    if f.seek(SeekFrom::Start(0)).is_ok() {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// Whether `f` is still the file at `path` (a holder that finishes
/// removes the file, and someone may have created a new one since).
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Tries before a held lock is reported: a holder writes its name just
/// after it locks, and [`holder`] locks for an instant to look.
const BUSY_TRIES: usize = 20;
const BUSY_PAUSE: Duration = Duration::from_millis(5);

impl Lock {
    /// Take the lock of `stack` in `state_dir`, or say who holds it.
    pub fn acquire(state_dir: &Path, stack: &str, command: &str) -> Result<Lock, String> {
        let dir = state_dir.join(stack);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join("lock");
        let me = Holder {
            pid: std::process::id(),
            host: std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            command: command.to_string(),
            since: now(),
        };
        let mut busy = 0;
        for _ in 0..BUSY_TRIES * 4 {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            match f.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    busy += 1;
                    if busy < BUSY_TRIES {
                        std::thread::sleep(BUSY_PAUSE);
                        continue;
                    }
                    return Err(match serde_json::from_str::<Holder>(&text(&mut f)) {
                        Ok(h) => format!(
                            "stack `{stack}` is locked by `{}` (pid {} on {}, for {}s); wait for it to finish",
                            h.command,
                            h.pid,
                            h.host,
                            now().saturating_sub(h.since)
                        ),
                        Err(_) => format!(
                            "stack `{stack}` is locked by another stackc process ({}); wait for it to finish",
                            path.display()
                        ),
                    });
                }
                Err(TryLockError::Error(e)) => {
                    return Err(format!("cannot lock {}: {e}", path.display()));
                }
            }
            if !same_file(&f, &path) {
                continue;
            }
            // Locked: whatever the file names did not release it, so it ended.
            let previous = text(&mut f);
            match serde_json::from_str::<Holder>(&previous) {
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
                Err(_) if !previous.trim().is_empty() => {
                    eprintln!(
                        "warning: removing an unreadable lock file {}",
                        path.display()
                    );
                }
                Err(_) => {}
            }
            f.set_len(0)
                .and_then(|()| f.seek(SeekFrom::Start(0)))
                .and_then(|_| f.write_all(serde_json::to_string(&me).expect("json").as_bytes()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            return Ok(Lock { path, _file: f });
        }
        Err(format!("cannot take the lock {}", path.display()))
    }
}

/// Who holds the lock of `stack`, when a live process does.
pub fn holder(state_dir: &Path, stack: &str) -> Option<String> {
    let mut f = File::open(state_dir.join(stack).join("lock")).ok()?;
    // A file nobody has locked is a stale one, whatever pid it names.
    if f.try_lock_shared().is_ok() {
        let _ = f.unlock();
        return None;
    }
    let h: Holder = serde_json::from_str(&text(&mut f)).ok()?;
    Some(format!("`{}` (pid {} on {})", h.command, h.pid, h.host))
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes when the file closes.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().expect("temp");
        let a = Lock::acquire(dir.path(), "s", "stackc apply").expect("free");
        let e = Lock::acquire(dir.path(), "s", "stackc destroy")
            .err()
            .expect("held");
        assert!(
            e.contains("is locked by `stackc apply` (pid ")
                && e.contains(&std::process::id().to_string()),
            "{e}"
        );
        assert!(holder(dir.path(), "s").is_some_and(|h| h.contains("stackc apply")));
        drop(a);
        assert!(!dir.path().join("s/lock").exists());
        assert_eq!(holder(dir.path(), "s"), None);
        let _b = Lock::acquire(dir.path(), "s", "stackc apply").expect("free again");
    }

    #[test]
    fn a_file_nobody_locks_is_stale_even_when_its_pid_lives() {
        let dir = tempfile::tempdir().expect("temp");
        std::fs::create_dir_all(dir.path().join("s")).expect("mkdir");
        // pid 1 is alive: only the missing flock says the holder is gone.
        std::fs::write(
            dir.path().join("s/lock"),
            r#"{"pid":1,"host":"h","command":"stackc apply","since":0}"#,
        )
        .expect("write");
        assert_eq!(holder(dir.path(), "s"), None);
        let _l = Lock::acquire(dir.path(), "s", "stackc apply").expect("stale lock replaced");
        let text = std::fs::read_to_string(dir.path().join("s/lock")).expect("read");
        assert!(
            text.contains(&format!("\"pid\":{}", std::process::id())),
            "{text}"
        );
    }
}
