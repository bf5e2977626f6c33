package web

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// vendored is one entry of vendor.json.
type vendored struct {
	File, Package, Version, Path, License, LicenseFile string
}

func readManifest(t *testing.T) []vendored {
	t.Helper()
	b, err := os.ReadFile("vendor.json")
	if err != nil {
		t.Fatal(err)
	}
	var m struct{ Files []vendored }
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Files
}

// Every file in static/vendor is listed, and every listed library ships its licence.
func TestVendorManifestComplete(t *testing.T) {
	files := readManifest(t)
	listed := map[string]bool{}
	for _, f := range files {
		listed[f.File] = true
	}
	entries, err := os.ReadDir("static/vendor")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !listed["static/vendor/"+e.Name()] {
			t.Errorf("static/vendor/%s is not in vendor.json", e.Name())
		}
	}
	for _, f := range files {
		if f.LicenseFile != "" && !listed[f.LicenseFile] {
			t.Errorf("%s: licence file %s not vendored", f.File, f.LicenseFile)
		}
	}
}

// The pins of vendor.json are the versions e2e/package-lock.json locks.
func TestVendorPinsMatchLock(t *testing.T) {
	b, err := os.ReadFile("e2e/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct{ Version string } `json:"packages"`
	}
	if err := json.Unmarshal(b, &lock); err != nil {
		t.Fatal(err)
	}
	for _, f := range readManifest(t) {
		if got := lock.Packages["node_modules/"+f.Package].Version; got != f.Version {
			t.Errorf("%s: vendor.json pins %s, package-lock.json %q", f.Package, f.Version, got)
		}
	}
}

// Each vendored file equals the file of the pinned npm package: from web/e2e/node_modules when
// `npm ci` installed it there, else from `npm pack`. Skips when neither is possible (no npm,
// no registry).
func TestVendoredFilesEqualNpm(t *testing.T) {
	packs := map[string]map[string][]byte{} // package@version → path → content, from npm pack
	for _, f := range readManifest(t) {
		got, err := os.ReadFile(f.File)
		if err != nil {
			t.Fatal(err)
		}
		want, src, err := npmFile(t, packs, f)
		if err != nil {
			t.Skipf("cannot read %s@%s from npm (%v): run `npm ci` in web/e2e", f.Package, f.Version, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s@%s/%s (%s)", f.File, f.Package, f.Version, f.Path, src)
		}
	}
}

func npmFile(t *testing.T, packs map[string]map[string][]byte, f vendored) ([]byte, string, error) {
	dir := filepath.Join("e2e", "node_modules", f.Package)
	if b, err := os.ReadFile(filepath.Join(dir, "package.json")); err == nil {
		var pj struct{ Version string }
		if json.Unmarshal(b, &pj) == nil && pj.Version == f.Version {
			data, err := os.ReadFile(filepath.Join(dir, f.Path))
			return data, "e2e/node_modules", err
		}
	}
	key := f.Package + "@" + f.Version
	if packs[key] == nil {
		files, err := npmPack(t, key)
		if err != nil {
			return nil, "", err
		}
		packs[key] = files
	}
	data, ok := packs[key]["package/"+f.Path]
	if !ok {
		return nil, "", fmt.Errorf("%s not in the package", f.Path)
	}
	return data, "npm pack", nil
}

func npmPack(t *testing.T, spec string) (map[string][]byte, error) {
	if _, err := exec.LookPath("npm"); err != nil {
		return nil, err
	}
	tmp := t.TempDir()
	cmd := exec.Command("npm", "pack", spec, "--silent", "--pack-destination", tmp)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("npm pack: %v: %s", err, bytes.TrimSpace(out))
	}
	tgz, err := filepath.Glob(filepath.Join(tmp, "*.tgz"))
	if err != nil || len(tgz) != 1 {
		return nil, fmt.Errorf("npm pack wrote %v", tgz)
	}
	fh, err := os.Open(tgz[0])
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			out[h.Name] = b
		}
	}
}
