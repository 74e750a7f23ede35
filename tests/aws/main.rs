//! Tests of the AWS adapters and of `lambent` on AWS services, against the
//! emulator that `scripts/test` starts (`LAMBENT_TEST_AWS_ENDPOINT`).

mod chat;
mod contracts;
mod first_token;
mod identity;
mod rotation;
mod startup;
