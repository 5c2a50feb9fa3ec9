pub mod config;
pub use config::ClipTextConfig;
