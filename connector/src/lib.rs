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

mod decode;
mod error;
mod frame;
mod native;
mod python;
mod reader;
mod title;

use std::{
    fs::File,
    io::{BufReader, BufWriter},
    process::ExitCode,
};

use aerogrid_proto::runtime::v1::{ConnectorMessage, Ready, connector_message, node_message};

use crate::reader::Incoming;

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
    let mut output = BufWriter::new(output);
    let schemas = reader::Schemas::default();
    let mut session = python::Session::start(schemas.clone())?;
    // Reading and decoding run on their own thread, a batch ahead of the interpreter.
    let incoming = reader::start(BufReader::new(input), schemas);
    frame::write(&mut output, &reply(connector_message::Kind::Ready(Ready {})))?;
    for message in incoming {
        let answer = match message? {
            Incoming::Batch(batch) => session.process(batch)?,
            Incoming::Other(node_message::Kind::Load(load)) => {
                title::set(&format!("aerogrid-connector {}/{}", load.team, load.app));
                session.load(load)?
            }
            Incoming::Other(node_message::Kind::Restore(restore)) => session.restore(restore)?,
            Incoming::Other(node_message::Kind::Tick(_)) => session.tick()?,
            Incoming::Other(node_message::Kind::Batch(_)) => {
                unreachable!("the reader decodes batches")
            }
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
