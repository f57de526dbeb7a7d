//! The webhooks' HTTP handler; the TLS listener is the shared stack's.

use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sessionguard_http::{Body, Handler, json, text};

use super::review::{self, Context};
use super::token::Tokens;

/// An AdmissionReview carries the old and the new object; pods stay far
/// below etcd's 1.5 MiB each, so this leaves room without inviting abuse.
const MAX_BODY: usize = 8 << 20;

/// The webhooks' request handler: the path token first, then the review.
pub struct Admission(pub Arc<Context>, pub Arc<Tokens>);

impl Handler for Admission {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        serve(req, &self.0, &self.1).await
    }
}

pub async fn serve(req: Request<Incoming>, ctx: &Context, tokens: &Tokens) -> Response<Body> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    // Before anything is read or parsed: a caller that does not know the
    // path (anyone but the API server) learns nothing, not even that a
    // webhook is here, and nothing it sends is recorded.
    let path = match tokens.route(req.uri().path()) {
        Ok(route) => route.to_string(),
        Err(why) => {
            ctx.metrics.unauthenticated(why.label());
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
    };
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
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
