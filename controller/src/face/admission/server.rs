//! The webhooks' HTTP handler; the TLS listener is the shared stack's.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sessionguard_http::{Body, Handler, json, text};

use super::review::{self, Context};

/// An AdmissionReview carries the old and the new object; pods stay far
/// below etcd's 1.5 MiB each, so this leaves room without inviting abuse.
const MAX_BODY: usize = 8 << 20;

/// The webhooks' request handler.
pub struct Admission(pub Arc<Context>);

impl Handler for Admission {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        serve(req, &self.0).await
    }
}

pub async fn serve(req: Request<Incoming>, ctx: &Context) -> Response<Body> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("reading the body: {e} (limit {MAX_BODY} bytes)\n"),
            );
        }
    };
    match review::handle(ctx, &path, &body) {
        Ok(out) => json(out),
        Err(review::BadRequest(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}
