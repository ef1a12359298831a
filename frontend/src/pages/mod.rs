//! One module per route.

pub(crate) mod app_page;
pub(crate) mod home;
pub(crate) mod team;
