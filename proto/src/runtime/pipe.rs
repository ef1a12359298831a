//! Framing of the pipe between a runtime node and its connector processes: each message is its
//! length as a little-endian `u32`, then its protobuf bytes. Both ends frame with this module,
//! so the format and its limits are written once.

/// The bytes of a frame's length prefix.
pub const PREFIX_BYTES: usize = 4;
/// The largest request a node sends a connector (a batch of records is far smaller).
pub const MAX_REQUEST_BYTES: usize = 256 << 20;
/// The largest answer a connector may send (a batch's changes, logs and bad records).
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

/// A frame longer than the receiver takes, or than a prefix can say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub bytes: usize,
    pub limit: usize,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "a message of {} MiB, above the limit of {} MiB",
            self.bytes >> 20,
            self.limit >> 20
        )
    }
}

impl std::error::Error for TooLarge {}

/// `message` as one frame (prefix and bytes, for one write), if it is at most `limit` bytes.
pub fn encode(message: &impl prost::Message, limit: usize) -> Result<Vec<u8>, TooLarge> {
    let length = message.encoded_len();
    let limit = limit.min(u32::MAX as usize);
    if length > limit {
        return Err(TooLarge { bytes: length, limit });
    }
    let mut frame = Vec::with_capacity(PREFIX_BYTES + length);
    frame.extend_from_slice(&(length as u32).to_le_bytes());
    message.encode_raw(&mut frame);
    Ok(frame)
}

/// The length a prefix announces, if it is at most `limit`: checked before anything of the
/// message is read or allocated.
pub fn length(prefix: [u8; PREFIX_BYTES], limit: usize) -> Result<usize, TooLarge> {
    let bytes = u32::from_le_bytes(prefix) as usize;
    if bytes > limit {
        return Err(TooLarge { bytes, limit });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::v1::{NodeMessage, node_message};

    #[test]
    fn a_frame_is_its_length_then_its_bytes_and_lengths_past_the_limit_are_refused() {
        let message = NodeMessage { kind: Some(node_message::Kind::Tick(Default::default())) };
        let frame = encode(&message, MAX_REQUEST_BYTES).unwrap();
        let announced = length(frame[..PREFIX_BYTES].try_into().unwrap(), 1024).unwrap();
        assert_eq!(announced, frame.len() - PREFIX_BYTES);
        let decoded: NodeMessage = prost::Message::decode(&frame[PREFIX_BYTES..]).unwrap();
        assert_eq!(decoded, message);
        assert_eq!(
            length((MAX_ANSWER_BYTES as u32 + 1).to_le_bytes(), MAX_ANSWER_BYTES),
            Err(TooLarge { bytes: MAX_ANSWER_BYTES + 1, limit: MAX_ANSWER_BYTES })
        );
        assert!(encode(&message, 1).is_err());
    }
}
