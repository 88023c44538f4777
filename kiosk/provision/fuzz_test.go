package provision

import (
	"maps"
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecodeSecrets: the sealed progress secret never panics, and what
// decodes re-encodes to something that decodes the same.
func FuzzDecodeSecrets(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "secrets", "*.bin"))
	if len(files) == 0 {
		f.Fatal("no seeds under testdata/secrets")
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("\x00{\"admin\":\"\\u0000x\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		admin, users, err := decodeSecrets(b)
		if err != nil {
			return
		}
		admin2, users2, err := decodeSecrets(encodeSecrets(admin, users))
		if err != nil || admin2 != admin || !maps.Equal(users, users2) && (len(users) > 0 || len(users2) > 0) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
