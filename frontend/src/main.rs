//! AeroGrid's browser app.
//!
//! A client-side (CSR) Leptos app: Trunk compiles it to wasm and the backend serves the one
//! `index.html` for every page path, so the app mounts on `<body>` whatever the URL is.
//! For now it is a single page that proves the whole chain works: the wasm starts, talks to the
//! backend over same-origin REST, and sees the browser session.

mod api;
mod app;

fn main() {
    leptos::mount::mount_to_body(app::app);
}
