package rendr_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/rendr-go/rendr"
)

// TestKeyFiles: a key saved is loaded back the same, from a file only its owner may read; a
// wg-style key file (base64 and a newline) loads; a file open to others, a directory, a
// file that is not a key and one far too large for a key are refused with an error that
// says what to do, and the zero key is never saved.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k := rendr.MustNewKey()
	path := filepath.Join(dir, "rendr.key")
	if err := rendr.SavePrivateKey(path, k); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && info.Mode().Perm() != 0o600 {
		t.Fatalf("saved key file mode %04o, want 0600", info.Mode().Perm())
	}
	got, err := rendr.LoadPrivateKey(path)
	if err != nil || got != k {
		t.Fatalf("load after save: %v (same key: %v)", err, got == k)
	}
	// Saving again replaces the key, and leaves no temporary file behind.
	k2 := rendr.MustNewKey()
	if err := rendr.SavePrivateKey(path, k2); err != nil {
		t.Fatal(err)
	}
	if got, err := rendr.LoadPrivateKey(path); err != nil || got != k2 {
		t.Fatalf("load after a second save: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files in the key's directory after two saves, want 1", len(ents))
	}

	text, _ := k.MarshalText()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	if got, err := rendr.LoadPrivateKey(write("wg.key", "  "+string(text)+"\n", 0o600)); err != nil || got != k {
		t.Fatalf("a wg-style key file: %v", err)
	}
	refused := map[string]struct {
		path string
		want string
	}{
		"no such file": {filepath.Join(dir, "absent"), "no such file"},
		"directory":    {dir, "not a regular file"},
		"not base64":   {write("junk.key", "not a key at all\n", 0o600), "32 bytes in base64"},
		"empty":        {write("empty.key", "", 0o600), "32 bytes in base64"},
		"huge":         {write("huge.key", strings.Repeat("A", 1<<20), 0o600), "not a key file"},
		"zero key":     {write("zero.key", strings.Repeat("A", 43)+"=\n", 0o600), "zero"},
	}
	if runtime.GOOS != "windows" {
		refused["readable by others"] = struct{ path, want string }{write("open.key", string(text), 0o644), "chmod 600"}
		refused["writable by the group"] = struct{ path, want string }{write("group.key", string(text), 0o620), "chmod 600"}
	}
	for name, c := range refused {
		if _, err := rendr.LoadPrivateKey(c.path); err == nil || !strings.Contains(err.Error(), c.want) ||
			strings.Count(err.Error(), "rendr:") != 1 {
			t.Errorf("%s: %v, want one error with %q", name, err, c.want)
		}
	}
	if err := rendr.SavePrivateKey(filepath.Join(dir, "z.key"), rendr.PrivateKey{}); err == nil {
		t.Error("the zero key was saved")
	}
	if err := rendr.SavePrivateKey(filepath.Join(dir, "no", "such", "dir.key"), k); err == nil {
		t.Error("saved into a directory that does not exist")
	}
}
