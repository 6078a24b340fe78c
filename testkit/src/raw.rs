//! A gRPC client that sends any bytes as a method's request and hands back the answers' bytes
//! undecoded: for requests that the SDK's typed clients cannot make (bytes that are no valid
//! message), on any method path.

use futures_util::Stream;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Request bytes as they are; answer bytes as they came.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Raw calls with `key` to the server at `endpoint`.
#[derive(Clone)]
pub struct RawClient {
    grpc: tonic::client::Grpc<Channel>,
    key: String,
}

impl RawClient {
    /// A client on a lazy channel to `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str, key: &str) -> RawClient {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
            .expect("endpoint")
            .connect_lazy();
        RawClient {
            grpc: tonic::client::Grpc::new(channel),
            key: key.to_owned(),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let value = format!("{}{}", ocx_api::metadata::BEARER_PREFIX, self.key);
        request.metadata_mut().insert(
            ocx_api::metadata::AUTHORIZATION,
            value.parse().expect("ascii key"),
        );
        request
    }

    /// A unary call of `path` (`/package.Service/Method`).
    pub async fn unary(&mut self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
        self.ready().await?;
        let path = path.parse().expect("method path");
        let request = self.request(body);
        self.grpc
            .unary(request, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A call with one request and a stream of answers; every answer, then the status it ended
    /// with (`Ok` for a clean end).
    pub async fn server_streaming(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> (Vec<Vec<u8>>, Result<(), Status>) {
        if let Err(status) = self.ready().await {
            return (Vec::new(), Err(status));
        }
        let path = path.parse().expect("method path");
        let request = self.request(body);
        match self.grpc.server_streaming(request, path, RawCodec).await {
            Ok(answers) => drain(answers.into_inner()).await,
            Err(status) => (Vec::new(), Err(status)),
        }
    }

    /// A call with a stream of requests (all of `bodies`) and a stream of answers; every
    /// answer, then the status it ended with.
    pub async fn streaming(
        &mut self,
        path: &str,
        bodies: Vec<Vec<u8>>,
    ) -> (Vec<Vec<u8>>, Result<(), Status>) {
        if let Err(status) = self.ready().await {
            return (Vec::new(), Err(status));
        }
        let path = path.parse().expect("method path");
        let request = self.request(futures_util::stream::iter(bodies));
        match self.grpc.streaming(request, path, RawCodec).await {
            Ok(answers) => drain(answers.into_inner()).await,
            Err(status) => (Vec::new(), Err(status)),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("not connected: {e}")))
    }
}

/// Every answer of `answers` until it ends; `Err` if it ended with a status other than OK.
async fn drain(
    answers: impl Stream<Item = Result<Vec<u8>, Status>>,
) -> (Vec<Vec<u8>>, Result<(), Status>) {
    use futures_util::StreamExt;
    let mut answers = std::pin::pin!(answers);
    let mut received = Vec::new();
    while let Some(answer) = answers.next().await {
        match answer {
            Ok(bytes) => received.push(bytes),
            Err(status) => return (received, Err(status)),
        }
    }
    (received, Ok(()))
}
