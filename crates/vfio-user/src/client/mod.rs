//! The vfio-user client: drives any device a vfio-user server hosts.
