package builder

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"go.yaml.in/yaml/v3"
)

// FuzzParseRecipe: any input either fails with an error or gives a recipe
// that validates and survives a YAML round trip unchanged.
func FuzzParseRecipe(f *testing.F) {
	for _, pat := range []string{"../images/*.yaml", "testdata/recipes/*.yaml"} {
		files, _ := filepath.Glob(pat)
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRecipe(bytes.NewReader(b), "fuzz.yaml")
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("parsed recipe does not validate: %v", err)
		}
		out, err := yaml.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRecipe(bytes.NewReader(out), "again.yaml")
		if err != nil {
			t.Fatalf("re-reading %s: %v", out, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v != %+v", r, r2)
		}
	})
}
