// Package excli is the command-line plumbing the example programs share: the -path flag and
// the policy graph it builds, private key files and the genkey and pubkey commands, repeated
// flags and logging, the carrier listeners a serving side opens, and splicing an
// application's TCP connection to a rendr flow.
//
// It is for the programs under examples only; applications write their own, with the rendr
// package's API as these do.
package excli
