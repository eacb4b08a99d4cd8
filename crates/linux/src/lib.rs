//! Linux backend for Stockade.
#![cfg(target_os = "linux")]
