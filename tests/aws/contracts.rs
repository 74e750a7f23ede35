//! Every port contract on the AWS adapters, against the emulator.
//! Every port contract and storage suite on this backend, listed once in
//! `lambent_tests::backend_suites!`.

lambent_tests::backend_suites!(emulator);
