//! EC2 instance identity: IMDSv2 client and verification of the signed identity document.
