//! A gRPC client below the generated stubs: any method path, any request
//! bytes, any `authorization` header, and plain HTTP/2 requests (bad
//! content types, broken frames). For tests of what the coordinator does
//! with input no well-behaved client sends.
use std::str::FromStr;

use anyhow::{Context, Result};
use bytes::{Buf, BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::ServiceExt;

/// Request and reply as raw protobuf bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct RawEncoder;

#[derive(Debug)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// What a plain HTTP/2 request got back.
#[derive(Debug)]
pub struct HttpReply {
    pub http_status: u16,
    /// grpc-status from the headers or trailers (`None`: none sent).
    pub grpc_status: Option<Code>,
    pub grpc_message: String,
}

/// One connection to a gRPC endpoint.
#[derive(Clone)]
pub struct RawGrpc {
    channel: Channel,
    url: String,
}

impl RawGrpc {
    /// Connects the way `pgsnap` does (TLS with the access's CA), without
    /// a token: each call says what it sends.
    pub async fn connect(access: &crate::Access) -> Result<Self> {
        Self::connect_as(access, None).await
    }

    /// `connect`, presenting a client certificate and key (PEM) when given.
    pub async fn connect_as(
        access: &crate::Access,
        identity: Option<(&str, &str)>,
    ) -> Result<Self> {
        let channel = access
            .channel_as(identity)
            .await
            .with_context(|| format!("connect to {}", access.url))?;
        Ok(Self {
            channel,
            url: access.url.clone(),
        })
    }

    /// A unary call of `path` with `body` as the request message and, when
    /// given, `authorization` as that header's value.
    pub async fn unary(
        &self,
        path: &str,
        body: Vec<u8>,
        authorization: Option<&str>,
    ) -> Result<Vec<u8>, Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("{} not ready: {e}", self.url)))?;
        let mut req = tonic::Request::new(body);
        if let Some(a) = authorization {
            let v = a
                .parse()
                .map_err(|_| Status::invalid_argument("not a header value"))?;
            req.metadata_mut().insert("authorization", v);
        }
        let path = http::uri::PathAndQuery::from_str(path)
            .map_err(|e| Status::invalid_argument(format!("path: {e}")))?;
        grpc.unary(req, path, RawCodec)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A plain HTTP/2 POST of `body` (sent as is: no gRPC framing added).
    pub async fn http(
        &self,
        path: &str,
        content_type: &str,
        authorization: Option<&str>,
        body: Vec<u8>,
    ) -> Result<HttpReply> {
        let uri = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut req = http::Request::post(uri)
            .header("content-type", content_type)
            .header("te", "trailers");
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let req = req.body(tonic::body::Body::new(Full::new(Bytes::from(body))))?;
        let resp = self.channel.clone().oneshot(req).await?;
        let http_status = resp.status().as_u16();
        let from_headers = Status::from_header_map(resp.headers());
        let collected = resp.into_body().collect().await;
        let from_trailers = collected
            .ok()
            .and_then(|c| c.trailers().cloned())
            .and_then(|t| Status::from_header_map(&t));
        let status = from_headers.or(from_trailers);
        Ok(HttpReply {
            http_status,
            grpc_status: status.as_ref().map(Status::code),
            grpc_message: status.map(|s| s.message().to_string()).unwrap_or_default(),
        })
    }
}
