//! What the controller shows the outside: metrics and health over HTTP, and
//! the admission webhooks over HTTPS. Faces read the cache and call
//! decisions; nothing below them imports a face.

pub mod admission;
pub mod blocked;
pub mod gauges;
pub mod heap;
pub mod http;
pub mod registry;
pub mod rollout_gauges;
