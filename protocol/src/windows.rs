//! The ready channel on Windows: an inherited handle to the write end of
//! an anonymous pipe, named by [`READY_HANDLE_ENV`]. There is no systemd,
//! so `NOTIFY_SOCKET` is not read.

use std::fs::File;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::windows::io::{FromRawHandle, RawHandle};

use windows_sys::Win32::Foundation::{
    GetLastError, HANDLE, HANDLE_FLAG_INHERIT, NO_ERROR, SetHandleInformation,
};
use windows_sys::Win32::Storage::FileSystem::{FILE_TYPE_PIPE, FILE_TYPE_UNKNOWN, GetFileType};

use crate::READY_HANDLE_ENV;

/// Writes `text` to the ready pipe if there is one; `Ok(false)` when there
/// is none (run on its own, or under systemfd, which has no ready channel).
pub(crate) fn send(text: &[u8]) -> io::Result<bool> {
    let Some(handle) = env_handle(READY_HANDLE_ENV)? else {
        return Ok(false);
    };
    // SAFETY: env_handle checked that the handle is an open pipe; the File
    // is never dropped, so the handle is not closed here.
    let mut pipe = ManuallyDrop::new(unsafe { File::from_raw_handle(handle) });
    pipe.write_all(text)?;
    Ok(true)
}

/// Reads a handle value from the environment and checks that it is an
/// open pipe (`None` if it is not open, as if the variable were unset).
/// The handle is made non-inheritable, so the server's own children do
/// not inherit the channel.
fn env_handle(var: &str) -> io::Result<Option<RawHandle>> {
    let Some(value) = std::env::var_os(var) else {
        return Ok(None);
    };
    let raw: usize = value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|&h| h != 0)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{var} is not a handle value"),
            )
        })?;
    let handle = raw as HANDLE;
    // SAFETY: GetFileType only reads the handle's type; a value that is not
    // an open handle gives FILE_TYPE_UNKNOWN and an error code.
    let kind = unsafe { GetFileType(handle) };
    // SAFETY: GetLastError only reads the calling thread's last-error code.
    if kind == FILE_TYPE_UNKNOWN && unsafe { GetLastError() } != NO_ERROR {
        // Not open: the variable was inherited without the handle (a child
        // of the server, or a server started by hand from a devsup shell).
        return Ok(None);
    }
    // Only ever write into the channel devsup made: a stale variable must
    // not make us write into whatever now has that handle value.
    if kind != FILE_TYPE_PIPE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{var}={raw} is not a pipe"),
        ));
    }
    // SAFETY: clears the inherit flag of the pipe handle checked above.
    if unsafe { SetHandleInformation(handle, HANDLE_FLAG_INHERIT, 0) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some(handle as RawHandle))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::windows::io::AsRawHandle;

    use super::*;

    #[test]
    fn notify_writes_to_the_ready_handle() {
        let (mut ours, theirs) = std::io::pipe().unwrap();
        let value = (theirs.as_raw_handle() as usize).to_string();
        // SAFETY: the only test in this crate that sets READY_HANDLE_ENV.
        unsafe { std::env::set_var(READY_HANDLE_ENV, &value) };
        assert!(crate::notify_ready().unwrap());
        assert!(crate::request_reload().unwrap());
        // A handle that is not a pipe is never written to.
        let file = tempfile_handle();
        // SAFETY: as above.
        unsafe {
            std::env::set_var(
                READY_HANDLE_ENV,
                (file.as_raw_handle() as usize).to_string(),
            )
        };
        let err = crate::notify_ready().unwrap_err();
        assert!(err.to_string().contains("is not a pipe"), "{err}");
        // SAFETY: as above.
        unsafe { std::env::remove_var(READY_HANDLE_ENV) };
        assert!(!crate::notify_ready().unwrap(), "alone: nobody to tell");
        drop(theirs);
        let mut got = String::new();
        ours.read_to_string(&mut got).unwrap();
        assert_eq!(got, "READY=1\nDEVSUP_RELOAD=1\n");
    }

    fn tempfile_handle() -> File {
        let path = std::env::temp_dir().join(format!("devsup-protocol-{}", std::process::id()));
        let file = File::create(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        file
    }
}
