use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    os::fd::AsRawFd,
    path::Path,
};

use crate::{Error, Result};

/// An exclusive lock on a data dir (`<data-dir>/lock`, flock), released when the holder and every
/// child that inherited it have exited.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| Error::io(format!("opening `{}`", path.display()), source))?;
        if !try_flock_exclusive(&file) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::DataDirInUse {
                dir: data_dir.to_owned(),
                holder: if holder.is_empty() { "unknown".to_owned() } else { holder.to_owned() },
            });
        }
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())
        };
        write_pid(&mut file)
            .map_err(|source| Error::io(format!("writing `{}`", path.display()), source))?;
        Ok(Self { file })
    }

    /// The descriptor children inherit so the lock outlives a crashed `aerogrid dev` until they
    /// are gone too.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.file.as_raw_fd()
    }
}

#[allow(unsafe_code, reason = "flock(2) has no safe wrapper in std")]
fn try_flock_exclusive(file: &File) -> bool {
    // SAFETY: the descriptor is valid for the lifetime of `file`.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let error = DataDirLock::acquire(dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once the holder is gone");
    }
}
