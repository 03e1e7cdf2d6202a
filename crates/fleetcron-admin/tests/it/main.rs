//! The admin surface's tests: the API on SQLite and PostgreSQL, the OpenAPI document against the live
//! server, `/metrics` against the history of a multi-worker run, and the dashboard in headless Chromium.

mod api;
mod browser;
mod metrics;
mod openapi;
mod support;
