//! AeroGrid's browser app.
//!
//! A client-side (CSR) Leptos app: Trunk compiles it to wasm and the backend serves the one
//! `index.html` for every page path, so the app mounts on `<body>` whatever the URL is.
//! Pages talk to the backend over same-origin REST (`api`) and gRPC-web (`grid`); the code
//! editor is Monaco, reached through `editor`.

mod api;
mod app;
mod editor;
mod grid;
mod pages;
mod templates;

fn main() {
    leptos::mount::mount_to_body(app::app);
}
