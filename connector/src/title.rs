//! The process title operators see in `ps`: `aerogrid-connector <team>/<app>`.
//!
//! A warm connector starts as `aerogrid-connector (idle)` with room to spare in its argv (the
//! node pads it); on Load it writes its app's name over that memory, as setproctitle does.

use std::sync::OnceLock;

/// The argv area, read before the sandbox hides `/proc`.
static ARGV_AREA: OnceLock<Option<(usize, usize)>> = OnceLock::new();

/// Finds the argv area; at start, while `/proc/self` can still be read.
pub(crate) fn prepare() {
    ARGV_AREA.get_or_init(argv_area);
}

/// Rewrites the command line shown by `ps` (within the original argv's length) and the thread
/// name shown by `top`.
#[allow(unsafe_code, reason = "writing over our own argv memory and prctl")]
pub(crate) fn set(title: &str) {
    let Some((start, end)) = *ARGV_AREA.get_or_init(argv_area) else { return };
    let capacity = end.saturating_sub(start);
    if capacity < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let length = bytes.len().min(capacity - 1);
    // SAFETY: [start, end) is this process's argv area, as the kernel reports it; Rust read the
    // arguments at start-up and keeps its own copies.
    unsafe {
        let area = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), area, length);
        std::ptr::write_bytes(area.add(length), 0, capacity - length);
    }
    let mut name = [0u8; 16];
    let short = &bytes[..bytes.len().min(15)];
    name[..short.len()].copy_from_slice(short);
    // SAFETY: `name` is a NUL-terminated buffer of 16 bytes, as PR_SET_NAME expects.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, name.as_ptr());
    }
}

/// `arg_start` and `arg_end` from /proc/self/stat (fields 48 and 49).
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces: field 3 first.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    Some((start, end))
}
