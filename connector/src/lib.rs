//! The connector process: one app's Python module in an embedded CPython.
//!
//! Started by the runtime node (`aerogrid connector`), it reads `NodeMessage`s from its stdin and
//! answers each with a `ConnectorMessage` on its stdout (`proto/aerogrid/runtime/v1/connector.proto`).
//! It never opens a network connection, a database or a file of its own: records come in, grid
//! changes, bad records and log lines go out.
//!
//! Invariants:
//! - This is the only crate that embeds CPython.
//! - The protocol owns the original stdin/stdout. Before Python starts, they are moved to other
//!   descriptors and fd 1 becomes a copy of stderr, so nothing user code writes (even with
//!   `os.write(1, ...)`) can corrupt a frame.

mod error;
mod frame;
mod python;
mod title;

use std::{
    fs::File,
    io::{BufReader, BufWriter},
    process::ExitCode,
};

use aerogrid_proto::runtime::v1::{ConnectorMessage, Ready, connector_message, node_message};

pub use error::{Error, Result};

/// Runs the connector until the node closes its stdin.
pub fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aerogrid-connector: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let (input, output) = frame::take_protocol_descriptors()?;
    let mut input = BufReader::new(input);
    let mut output = BufWriter::new(output);
    let mut session = python::Session::start()?;
    frame::write(&mut output, &reply(connector_message::Kind::Ready(Ready {})))?;
    while let Some(message) = frame::read(&mut input)? {
        let Some(kind) = message.kind else {
            return Err(Error::Protocol("a node message without content".to_owned()));
        };
        let answer = match kind {
            node_message::Kind::Load(load) => {
                title::set(&format!("aerogrid-connector {}/{}", load.team, load.app));
                session.load(load)?
            }
            node_message::Kind::Batch(batch) => session.process(batch)?,
            node_message::Kind::Restore(restore) => session.restore(restore)?,
            node_message::Kind::Tick(_) => session.tick()?,
        };
        frame::write(&mut output, &reply(answer))?;
    }
    Ok(())
}

fn reply(kind: connector_message::Kind) -> ConnectorMessage {
    ConnectorMessage { kind: Some(kind) }
}

/// Keeps `File` in the public signature of `frame` simple.
type Pipe = File;
