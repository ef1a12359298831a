//! A real connector process (`aerogrid connector`) driven over its pipe protocol, as a runtime
//! node drives it.

use std::{
    io::{Read, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use aerogrid_proto::runtime::v1::{
    Batch, BatchResult, ConnectorMessage, Load, NodeMessage, RawMessage, connector_message::Kind,
    node_message,
};
use prost::Message;

pub(crate) struct ConnectorProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// The sandbox layers it reported.
    pub(crate) layers: Vec<String>,
}

impl ConnectorProcess {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts `aerogrid connector` with `args` (e.g. `--no-audit-hook`).
    pub(crate) fn start_with(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aerogrid"))
            .arg("connector")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // A pipe, as a node gives it (a regular file would meet the size limit of 0).
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aerogrid connector");
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("connector stderr: {line}");
            }
        });
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut process = Self { child, stdin, stdout, layers: Vec::new() };
        match process.receive() {
            Kind::Ready(ready) => process.layers = ready.sandbox,
            other => panic!("a connector says it is ready, not {other:?}"),
        }
        process
    }

    pub(crate) fn send(&mut self, kind: node_message::Kind) -> Kind {
        let bytes = NodeMessage { kind: Some(kind) }.encode_to_vec();
        self.stdin.write_all(&u32::try_from(bytes.len()).unwrap().to_le_bytes()).unwrap();
        self.stdin.write_all(&bytes).unwrap();
        self.stdin.flush().unwrap();
        self.receive()
    }

    pub(crate) fn receive(&mut self) -> Kind {
        let mut length = [0u8; 4];
        self.stdout.read_exact(&mut length).expect("a frame from the connector");
        let mut bytes = vec![0u8; u32::from_le_bytes(length) as usize];
        self.stdout.read_exact(&mut bytes).unwrap();
        ConnectorMessage::decode(bytes.as_slice()).unwrap().kind.expect("a message kind")
    }

    pub(crate) fn load(&mut self, source: &str) -> Kind {
        self.load_with(source, Load::default())
    }

    /// Loads `source` with the limits of `load`.
    pub(crate) fn load_with(&mut self, source: &str, load: Load) -> Kind {
        self.send(node_message::Kind::Load(Load {
            team: "acme".into(),
            app: "orders".into(),
            source: source.into(),
            filename: "main.py".into(),
            ..load
        }))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end (the watchdog ends a stuck one).
    pub(crate) fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    pub(crate) fn batch(&mut self, topic: &str, values: &[&[u8]]) -> BatchResult {
        self.batch_with_schemas(topic, values, Vec::new())
    }

    /// A batch with the registry's writer schemas its messages name (as the node sends them).
    pub(crate) fn batch_with_schemas(
        &mut self,
        topic: &str,
        values: &[&[u8]],
        writer_schemas: Vec<aerogrid_proto::runtime::v1::WriterSchema>,
    ) -> BatchResult {
        let messages = values
            .iter()
            .enumerate()
            .map(|(offset, value)| RawMessage {
                key: Some(format!("k{offset}").into_bytes()),
                value: Some(value.to_vec()),
                partition: 0,
                offset: offset as i64,
                timestamp: None,
            })
            .collect();
        match self.send(node_message::Kind::Batch(Batch {
            topic: topic.into(),
            messages,
            writer_schemas,
        })) {
            Kind::Result(result) => result,
            other => panic!("expected a batch result, got {other:?}"),
        }
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
