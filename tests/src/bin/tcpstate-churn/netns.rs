//! Entering a network namespace made elsewhere (`/run/netns/NAME`).
use std::{fs::File, os::fd::AsRawFd};

/// Moves the calling thread into namespace `name`.
pub fn enter(name: &str) -> std::io::Result<()> {
    let path = format!("/run/netns/{name}");
    let file = File::open(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("opening {path}: {e}")))?;
    // SAFETY: a valid namespace fd; setns only affects this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("setns({path}): {e}")));
    }
    Ok(())
}

/// Runs `f` on a thread inside namespace `name`, or here for `None`.
pub fn run_in<R: Send + 'static>(
    name: Option<&str>,
    f: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> std::io::Result<R> {
    let Some(name) = name else {
        return f();
    };
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("namespace thread panicked"))?
}
