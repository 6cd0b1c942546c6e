// Command gen indexes a Go package and writes the main program that Sky Island builds
// for it. It runs inside the build jail.
//
// Without -call it writes the package's dispatcher: one binary per package version that
// can call any exported, non-generic function with literal arguments given at run time.
// With -call it writes a main program for that one call, as the original Sky Island did.
// With -out it then builds that program there. It prints the package's index (its
// exported identifiers) as JSON on stdout; the compiler's output goes to stderr.
//
// Exit status: 0 success, 2 usage, 4 the package cannot be a function library (stderr
// says why), 5 the build failed (stderr has the compiler's output).
package main

import (
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

//go:embed templates/*.tmpl
var templates embed.FS

// Index is what Sky Island learns about the package.
type Index struct {
	Name       string   `json:"name"`
	ImportPath string   `json:"import_path"`
	ModuleRoot string   `json:"module_root"`
	Funcs      []string `json:"funcs"`
	Generic    []string `json:"generic"`
	Values     []string `json:"values"`
	Types      []string `json:"types"`
}

// Exit status 4 means: the package cannot be built as a function library; stderr says why.
func refuse(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(4)
}

func main() {
	root := flag.String("root", "", "the repository's source tree")
	repo := flag.String("repo", "", "the repository's import path (host/owner/name)")
	subdir := flag.String("subdir", "", "the package directory inside the repository")
	goVersion := flag.String("goversion", "", "go directive for a go.mod written for a repository without one")
	mainDir := flag.String("main", "", "name of the directory (in the module root) to write the main package to")
	call := flag.String("call", "", "the call, for a per-call main program")
	out := flag.String("out", "", "build the main program into this file")
	flag.Parse()
	if *root == "" || *repo == "" || *mainDir == "" || *goVersion == "" {
		flag.Usage()
		os.Exit(2)
	}
	pkgDir := filepath.Join(*root, filepath.FromSlash(*subdir))
	modRoot, modPath, err := findModule(*root, pkgDir, *repo, *goVersion)
	if err != nil {
		refuse("%v", err)
	}
	rel, err := filepath.Rel(modRoot, pkgDir)
	if err != nil {
		refuse("%v", err)
	}
	importPath := modPath
	if rel != "." {
		importPath = modPath + "/" + filepath.ToSlash(rel)
	}
	index, err := indexPackage(pkgDir, importPath)
	if err != nil {
		refuse("%v", err)
	}
	if index.ModuleRoot, err = filepath.Rel(*root, modRoot); err != nil {
		refuse("%v", err)
	}
	dir := filepath.Join(modRoot, *mainDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		refuse("%v", err)
	}
	data := struct {
		Index
		Call string
	}{index, *call}
	files := map[string]string{"main.go": "call_main.go.tmpl"}
	if *call == "" {
		files = map[string]string{"main.go": "dispatch_main.go.tmpl", "funcs.go": "funcs.go.tmpl"}
	}
	for name, tmpl := range files {
		if err := render(filepath.Join(dir, name), tmpl, data); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if *out != "" && !goBuild(modRoot, *mainDir, *out) {
		os.Exit(5)
	}
	if err := json.NewEncoder(os.Stdout).Encode(index); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// findModule returns the module root and path for pkgDir: the nearest go.mod at or
// above it within root, or a go.mod written at root for a repository without one.
func findModule(root, pkgDir, repo, goVersion string) (string, string, error) {
	for dir := pkgDir; ; dir = filepath.Dir(dir) {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			path := modulePath(data)
			if path == "" {
				return "", "", fmt.Errorf("%s/go.mod has no module line", relTo(root, dir))
			}
			return dir, path, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", "", err
		}
		if dir == root || len(dir) <= len(root) {
			break
		}
	}
	gomod := fmt.Sprintf("module %s\n\ngo %s\n", repo, goVersion)
	tmp := filepath.Join(root, fmt.Sprintf(".go.mod.%d", os.Getpid()))
	if err := os.WriteFile(tmp, []byte(gomod), 0o644); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, filepath.Join(root, "go.mod")); err != nil {
		return "", "", err
	}
	return root, repo, nil
}

func relTo(root, dir string) string {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return dir
	}
	return rel
}

// modulePath reads the module line of a go.mod file.
func modulePath(gomod []byte) string {
	for _, line := range strings.Split(string(gomod), "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if strings.HasPrefix(line, "module") {
			rest := strings.TrimSpace(strings.TrimPrefix(line, "module"))
			if rest != line && rest != "" {
				return strings.Trim(rest, "\"`")
			}
		}
	}
	return ""
}

// indexPackage lists the package's exported identifiers, from the files a CGO_ENABLED=0
// build of this GOOS and GOARCH would compile.
func indexPackage(dir, importPath string) (Index, error) {
	ctxt := build.Default
	ctxt.CgoEnabled = false
	pkg, err := ctxt.ImportDir(dir, 0)
	if err != nil {
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return Index{}, fmt.Errorf("no Go files in package %s", importPath)
		}
		return Index{}, fmt.Errorf("package %s: %v", importPath, err)
	}
	if pkg.Name == "main" {
		return Index{}, fmt.Errorf("%s is a command (package main), not a library whose functions can be called", importPath)
	}
	index := Index{Name: pkg.Name, ImportPath: importPath, Funcs: []string{}, Generic: []string{}, Values: []string{}, Types: []string{}}
	fset := token.NewFileSet()
	for _, file := range pkg.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(dir, file), nil, parser.SkipObjectResolution)
		if err != nil {
			return Index{}, err
		}
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if d.Recv != nil || !d.Name.IsExported() {
					continue
				}
				if d.Type.TypeParams != nil && len(d.Type.TypeParams.List) > 0 {
					index.Generic = append(index.Generic, d.Name.Name)
				} else {
					index.Funcs = append(index.Funcs, d.Name.Name)
				}
			case *ast.GenDecl:
				for _, spec := range d.Specs {
					switch s := spec.(type) {
					case *ast.ValueSpec:
						for _, name := range s.Names {
							if name.IsExported() {
								index.Values = append(index.Values, name.Name)
							}
						}
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							index.Types = append(index.Types, s.Name.Name)
						}
					}
				}
			}
		}
	}
	for _, list := range [][]string{index.Funcs, index.Generic, index.Values, index.Types} {
		sort.Strings(list)
	}
	return index, nil
}

// goBuild compiles the main package in mainDir (below the module root) into out: a
// static, stripped binary; module-aware, using the repository's vendor directory when it
// has one.
func goBuild(modRoot, mainDir, out string) bool {
	goCmd := os.Getenv("GO")
	if goCmd == "" {
		goCmd = "go"
	}
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", out}
	if _, err := os.Stat(filepath.Join(modRoot, "vendor")); err != nil {
		args = append(args, "-mod=mod")
	}
	cmd := exec.Command(goCmd, append(args, "./"+mainDir)...)
	cmd.Dir = modRoot
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	return cmd.Run() == nil
}

func render(path, name string, data interface{}) error {
	tmpl, err := template.ParseFS(templates, "templates/"+name)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := tmpl.Execute(f, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
