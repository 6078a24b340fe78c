//! The codec of the generated servers: tonic's prost codec, except for a request the server
//! cannot decode (invalid UTF-8 in a string field, a bad varint, a wrong wire type, field
//! number 0, a truncated message). tonic answers those `INTERNAL`, which the contract keeps
//! for faults of the server; the request is the caller's fault, so it is `INVALID_ARGUMENT`
//! naming the message the method expects. The clients keep tonic's own codec: an answer they
//! cannot decode is not their caller's fault.

use prost::{Message, Name};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Encodes answers `T`, decodes requests `U` (named by the generated servers).
#[derive(Debug, Clone)]
pub struct RequestCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        RequestCodec(ProstCodec::default())
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> ProstEncoder<T> {
        self.0.encoder()
    }

    fn decoder(&mut self) -> RequestDecoder<U> {
        RequestDecoder(self.0.decoder())
    }
}

/// Decodes requests `U`; see the module.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Name + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            let request = U::full_name();
            tracing::info!(%request, detail = status.message(), "a request could not be decoded");
            not_valid(&request, status.message())
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// What tonic's decoder puts before the decoder's own words.
const DECODER_PREFIX: &str = "failed to decode Protobuf message: ";

/// The status of a request that is not a valid `message` (full name); `detail` is what the
/// decoder said, which names the field where it stopped.
pub fn not_valid(message: &str, detail: &str) -> Status {
    let detail = detail.strip_prefix(DECODER_PREFIX).unwrap_or(detail);
    Status::invalid_argument(format!(
        "the request is not a valid {message} ({detail}); encode it from the {message} \
         of this server's proto files"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_message_and_where_decoding_stopped_without_tonics_prefix() {
        let status = not_valid(
            "ocx.v1.GetNumberRequest",
            "failed to decode Protobuf message: GetNumberRequest.number: invalid string value: data is not UTF-8 encoded",
        );
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "the request is not a valid ocx.v1.GetNumberRequest (GetNumberRequest.number: \
             invalid string value: data is not UTF-8 encoded); encode it from the \
             ocx.v1.GetNumberRequest of this server's proto files"
        );
    }
}
