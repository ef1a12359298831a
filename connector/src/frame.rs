//! Length-prefixed protobuf frames on the pipes, and taking the pipes away from fds 0 and 1.

use std::{
    io::{ErrorKind, Read, Write},
    os::fd::{FromRawFd, OwnedFd},
};

use aerogrid_proto::runtime::{
    pipe,
    v1::{ConnectorMessage, NodeMessage},
};
use prost::Message;

use crate::{Error, Pipe, Result};

/// Reads one message; `None` when the node closed the pipe.
pub(crate) fn read(input: &mut impl Read) -> Result<Option<NodeMessage>> {
    let mut prefix = [0u8; pipe::PREFIX_BYTES];
    match input.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error.into()),
    }
    let length = pipe::length(prefix, pipe::MAX_REQUEST_BYTES)
        .map_err(|too_large| Error::Protocol(too_large.to_string()))?;
    let mut bytes = vec![0u8; length];
    input.read_exact(&mut bytes)?;
    NodeMessage::decode(bytes.as_slice())
        .map(Some)
        .map_err(|error| Error::Protocol(error.to_string()))
}

pub(crate) fn write(output: &mut impl Write, message: &ConnectorMessage) -> Result<()> {
    // Any length a prefix can say: the node refuses what is past its limit with a message.
    let frame = pipe::encode(message, usize::MAX)
        .map_err(|too_large| Error::Protocol(too_large.to_string()))?;
    output.write_all(&frame)?;
    output.flush()?;
    Ok(())
}

/// Moves the protocol pipes off fds 0 and 1: fd 0 becomes /dev/null and fd 1 a copy of stderr.
#[allow(unsafe_code, reason = "dup and dup2 have no safe wrapper in std")]
pub(crate) fn take_protocol_descriptors() -> Result<(Pipe, Pipe)> {
    // SAFETY: plain descriptor calls; each new descriptor is owned exactly once below.
    unsafe {
        let input = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        let output = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if input < 0 || output < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null < 0 || libc::dup2(null, 0) < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        libc::close(null);
        Ok((Pipe::from(OwnedFd::from_raw_fd(input)), Pipe::from(OwnedFd::from_raw_fd(output))))
    }
}
