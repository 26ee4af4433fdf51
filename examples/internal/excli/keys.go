package excli

// Keys: the genkey and pubkey commands, and the -key and -peer flags.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/rendr-go/rendr"
)

// GenKey writes a new private key to stdout, one line of base64. When stdout is a regular
// file (genkey > FILE), it is made readable by its owner alone first: loadKey refuses a key
// file others can read, and the shell creates the file with the umask's mode.
func GenKey(stdout io.Writer) error {
	k, err := rendr.NewKey()
	if err != nil {
		return err
	}
	if f, ok := stdout.(*os.File); ok {
		if info, err := f.Stat(); err == nil && info.Mode().IsRegular() {
			if err := f.Chmod(0o600); err != nil {
				return fmt.Errorf("genkey: making the key file private: %w", err)
			}
		}
	}
	b, _ := k.MarshalText()
	_, err = fmt.Fprintf(stdout, "%s\n", b)
	return err
}

// PubKey reads a private key from stdin, as GenKey writes it, and writes its public key to
// stdout.
func PubKey(stdin io.Reader, stdout io.Writer) error {
	b, err := io.ReadAll(io.LimitReader(stdin, 1024))
	if err != nil {
		return err
	}
	k, err := rendr.ParsePrivateKey(strings.TrimSpace(string(b)))
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, k.Public())
	return err
}

// loadKey reads the private key in the file the -key flag names. prog is the program's name,
// for the error that says how to make one.
func loadKey(path, prog string) (rendr.PrivateKey, error) {
	if path == "" {
		return rendr.PrivateKey{}, fmt.Errorf("-key is required: a file holding this side's private key (%s genkey > FILE)", prog)
	}
	k, err := rendr.LoadPrivateKey(path)
	if err != nil {
		return rendr.PrivateKey{}, fmt.Errorf("-key: %w", err)
	}
	return k, nil
}

// parsePeers reads the public keys of repeated -peer flags, as pubkey prints them. what names
// the peers, for the error when there is none: "a client's public key (socks5 pubkey <
// client.key)".
func parsePeers(keys []string, what string) ([]rendr.PublicKey, error) {
	if len(keys) == 0 {
		return nil, errors.New("-peer is required: " + what)
	}
	var out []rendr.PublicKey
	for _, s := range keys {
		k, err := rendr.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("-peer %q: %w", s, err)
		}
		out = append(out, k)
	}
	return out, nil
}
