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
mod sandbox;
mod title;

use std::{
    fs::File,
    io::{BufReader, BufWriter},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use aerogrid_proto::runtime::v1::{
    ConnectorMessage, Ready, Refused, connector_message, node_message,
};

use crate::{reader::Incoming, sandbox::audit};

pub use error::{Error, Result};
pub use sandbox::Sandbox;

/// Runs the connector until the node closes its stdin; as root and sandboxed, as user `uid`;
/// with the app's packages from `python_env`.
pub fn main(sandbox: Sandbox, uid: Option<u32>, python_env: Option<PathBuf>) -> ExitCode {
    match run(sandbox, uid, python_env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aerogrid-connector: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(sandbox: Sandbox, uid: Option<u32>, python_env: Option<PathBuf>) -> Result<()> {
    sandbox::single_threaded_numerics();
    let (input, output) = frame::take_protocol_descriptors()?;
    title::prepare();
    let sandboxed = sandbox != Sandbox::Off;
    let mut layers = if sandboxed { sandbox::before_interpreter(uid)? } else { Vec::new() };
    let schemas = reader::Schemas::default();
    let mut session = python::Session::start(schemas.clone())?;
    let python_env = python_env
        .map(|env| {
            env.canonicalize().map_err(|error| {
                Error::Sandbox(format!("the app's packages at {}: {error}", env.display()))
            })
        })
        .transpose()?;
    if sandboxed {
        layers.extend(sandbox::after_interpreter(sandbox == Sandbox::On, python_env.as_deref())?);
    } else if let Some(env) = &python_env {
        sandbox::add_packages(env)?;
    }
    // Shared with the watchdog, which answers for a call that never returns.
    let output = Arc::new(Mutex::new(BufWriter::new(output)));
    // Reading and decoding run on their own thread, a batch ahead of the interpreter.
    let reader = reader::start(BufReader::new(input), schemas)?;
    sandbox::watchdog::start(output.clone())?;
    if sandboxed {
        layers.push(sandbox::seal()?);
    }
    write(&output, connector_message::Kind::Ready(Ready { sandbox: layers }))?;
    let mut memory_limit = None;
    for message in reader.incoming {
        let answer = match message? {
            Incoming::Batch(batch) => {
                let answer = session.process(&batch);
                // (The reader is gone only when the pipe is: then so is this loop.)
                let _ = reader.spent.send(batch);
                answer
            }
            Incoming::Other(node_message::Kind::Load(load)) => {
                title::set(&format!("aerogrid-connector {}/{}", load.team, load.app));
                memory_limit = load.memory_limit_bytes;
                session.load(load)
            }
            Incoming::Other(node_message::Kind::Restore(restore)) => session.restore(restore),
            Incoming::Other(node_message::Kind::Tick(_)) => session.tick(),
            Incoming::Other(node_message::Kind::Batch(_)) => {
                unreachable!("the reader decodes batches")
            }
        };
        // A refusal stands whatever the user's code made of its exception.
        let answer = match (audit::take_refusal(), answer) {
            (Some(refusal), _) => refused(refusal.message, refusal.line),
            (None, Err(Error::OutOfMemory { line })) => {
                refused(out_of_memory_message(memory_limit, line), line)
            }
            // What user code made that the interpreter cannot hand over: the same input would
            // fail a restarted connector the same way, so the app fails with the reason.
            (None, Err(Error::Python(message))) => {
                refused(format!("the app's answer cannot be read: {message}"), None)
            }
            (None, answer) => answer?,
        };
        write(&output, answer)?;
    }
    Ok(())
}

fn refused(message: String, line: Option<u32>) -> connector_message::Kind {
    connector_message::Kind::Refused(Refused { message, line })
}

fn out_of_memory_message(limit: Option<u64>, line: Option<u32>) -> String {
    let limit = match limit {
        Some(bytes) => format!("its memory limit of {} MiB", bytes / (1024 * 1024)),
        None => "the memory available".to_owned(),
    };
    match line {
        Some(line) => format!("the app used more than {limit} (line {line})"),
        None => format!("the app used more than {limit}"),
    }
}

fn write(output: &Mutex<BufWriter<Pipe>>, kind: connector_message::Kind) -> Result<()> {
    let mut output = output.lock().expect("no panic holds the output");
    frame::write(&mut *output, &ConnectorMessage { kind: Some(kind) })
}

/// Keeps `File` in the public signature of `frame` simple.
type Pipe = File;
