// Package excli is the command-line plumbing the example programs share: the -path flag and
// the policy graph it builds, private key files and the genkey and pubkey commands, the
// subcommand dispatch and the signals that stop a program, repeated flags and logging, the
// carrier listeners a serving side opens, the accept loop of the side that takes the
// application's connections, and splicing such a connection to a rendr flow.
//
// It is for the programs under examples only; an application writes its own, on the rendr
// package's API as these do.
package excli
