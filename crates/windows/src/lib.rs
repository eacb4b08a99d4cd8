//! Windows backend for Stockade.
