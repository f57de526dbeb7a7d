//! The webhooks' HTTP handler; the TLS listener is the shared stack's.

use std::sync::Arc;
use std::time::Instant;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use sessionguard_http::{Body, ClientCertificate, Handler, json, text};

use super::metrics::WebhookLabels;
use super::review::{self, Context, Webhook};
use super::token::{Refused, Tokens};

/// An AdmissionReview carries the old and the new object; pods stay far
/// below etcd's 1.5 MiB each, so this leaves room without inviting abuse.
const MAX_BODY: usize = 8 << 20;

/// The webhooks' request handler: the client certificate (with
/// `--webhook-client-ca`) and the path token first, then the review.
pub struct Admission {
    pub ctx: Arc<Context>,
    pub tokens: Arc<Tokens>,
    /// Only a caller with a client certificate the `--webhook-client-ca`
    /// signed (the API server, per its AdmissionConfiguration) gets further.
    pub require_client_cert: bool,
}

impl Handler for Admission {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        serve(req, &self.ctx, &self.tokens, self.require_client_cert).await
    }
}

pub async fn serve(
    req: Request<Incoming>,
    ctx: &Context,
    tokens: &Tokens,
    require_client_cert: bool,
) -> Response<Body> {
    let started = Instant::now();
    let mut webhook = "none";
    let resp = answer(req, ctx, tokens, require_client_cert, &mut webhook).await;
    ctx.metrics
        .served
        .get_or_create(&WebhookLabels { webhook })
        .observe(started.elapsed().as_secs_f64());
    resp
}

async fn answer(
    req: Request<Incoming>,
    ctx: &Context,
    tokens: &Tokens,
    require_client_cert: bool,
    webhook: &mut &'static str,
) -> Response<Body> {
    if req.method() == Method::GET && req.uri().path() == "/healthz" {
        return text(StatusCode::OK, "ok\n");
    }
    // Before anything is read or parsed: a caller that does not know the
    // path (anyone but the API server) learns nothing, not even that a
    // webhook is here, and nothing it sends is recorded.
    let certified = req.extensions().get::<ClientCertificate>() == Some(&ClientCertificate(true));
    let route = match require_client_cert && !certified {
        true => Err(Refused::NoClientCert),
        false => tokens.route(req.uri().path()),
    };
    let path = match route {
        Ok(route) => route.to_string(),
        Err(why) => {
            ctx.metrics.unauthenticated(why.label());
            return text(StatusCode::NOT_FOUND, "404 page not found\n");
        }
    };
    // Routed once: the label here, the decision below.
    let Some(hook) = Webhook::from_path(&path) else {
        return text(StatusCode::BAD_REQUEST, format!("no webhook at {path}\n"));
    };
    *webhook = hook.label();
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
    match review::answer_hook(ctx, hook, &body) {
        Ok(out) => json(out),
        Err(review::BadRequest(why)) => text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    }
}
