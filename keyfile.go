// Key files: a private key saved and loaded as one line of base64, as wg's are, in a file only
// its owner may read.

package rendr

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// maxKeyFile bounds what LoadPrivateKey reads: a key is 44 characters of base64; a file much
// larger is not a key file, and is not read into memory whole.
const maxKeyFile = 4 << 10

// LoadPrivateKey reads a private key from a file that holds it in base64 (what SavePrivateKey
// and `wg genkey` write), surrounding white space allowed. On systems with Unix permissions it
// refuses a file that anyone but its owner can read or write (the key would already be
// exposed, and a careless copy would stay so), with an error that says how to fix it.
func LoadPrivateKey(path string) (PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("rendr: private key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("rendr: private key: %w", err)
	}
	if !info.Mode().IsRegular() {
		return PrivateKey{}, fmt.Errorf("rendr: private key %s: not a regular file", path)
	}
	if err := checkKeyMode(path, info.Mode()); err != nil {
		return PrivateKey{}, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("rendr: private key %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return PrivateKey{}, fmt.Errorf("rendr: private key %s: over %d bytes: not a key file", path, maxKeyFile)
	}
	k, err := ParsePrivateKey(string(b))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// checkKeyMode refuses a key file others may read or write, where permissions mean that.
func checkKeyMode(path string, mode fs.FileMode) error {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		return nil // no Unix permission bits to check
	}
	if perm := mode.Perm(); perm&0o077 != 0 {
		return fmt.Errorf("rendr: private key %s is open to others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	return nil
}

// SavePrivateKey writes k to path in base64 with a newline, readable and writable by its
// owner alone (mode 0600), replacing the file if it exists: through a temporary file in the
// same directory, renamed over it, so a reader never sees half a key and a crash never leaves
// one.
func SavePrivateKey(path string, k PrivateKey) error {
	if err := k.check("SavePrivateKey's key"); err != nil {
		return err
	}
	text, _ := k.MarshalText()
	f, err := os.CreateTemp(filepath.Dir(path), ".rendr-key-*")
	if err != nil {
		return fmt.Errorf("rendr: saving private key: %w", err)
	}
	tmp := f.Name()
	// CreateTemp makes the file 0600 already; say so in case a umask or a system differs.
	err = errors.Join(f.Chmod(0o600), write(f, append(text, '\n')), f.Sync(), f.Close())
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rendr: saving private key: %w", err)
	}
	return nil
}

func write(f *os.File, b []byte) error {
	_, err := f.Write(b)
	return err
}
