//! Checks between a daemon config and the nginx location that passes requests to it.
