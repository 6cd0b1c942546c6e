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
	"bufio"
	"embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
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
	countTree := flag.Int64("count-tree", -1, "read `git ls-tree -r -l` on stdin and refuse (exit 11) a tree over this many bytes")
	flag.Parse()
	if *countTree >= 0 {
		os.Exit(treeSize(os.Stdin, *countTree))
	}
	if *root == "" || *repo == "" || *mainDir == "" || *goVersion == "" {
		flag.Usage()
		os.Exit(2)
	}
	pkgDir := filepath.Join(*root, filepath.FromSlash(*subdir))
	// The checkout holds no symbolic links (Sky Island checks them out as plain files);
	// checked again here, for every directory on the way to the package.
	if err := noLinksBetween(*root, pkgDir); err != nil {
		refuse("%v", err)
	}
	modRoot, modPath, err := findModule(*root, pkgDir, *repo, *goVersion)
	if err != nil {
		refuse("%v", err)
	}
	if err := checkReplaces(*root, modRoot); err != nil {
		refuse("%v", err)
	}
	if err := checkIncludes(*root); err != nil {
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
	// Whatever the repository holds under that name goes: the directory is ours.
	if err := os.RemoveAll(dir); err != nil {
		refuse("%v", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
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
		data, err := readNoFollow(filepath.Join(dir, "go.mod"))
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
	tmp := filepath.Join(root, fmt.Sprintf(".skyisland-go.mod.%d", os.Getpid()))
	os.Remove(tmp)
	if err := writeNew(tmp, []byte(gomod)); err != nil {
		return "", "", err
	}
	if err := os.Rename(tmp, filepath.Join(root, "go.mod")); err != nil {
		return "", "", err
	}
	return root, repo, nil
}

// treeSize adds up a tree listed by `git ls-tree -r -l` (a 4 KiB block per entry on top of
// the blobs' bytes) and prints "entries bytes"; a tree over limit is refused with exit
// status 11, before anything of it is written.
func treeSize(listing io.Reader, limit int64) int {
	var entries, bytes int64
	scanner := bufio.NewScanner(listing)
	scanner.Buffer(make([]byte, 64*1024), 1<<20)
	for scanner.Scan() {
		meta, _, _ := strings.Cut(scanner.Text(), "\t")
		fields := strings.Fields(meta)
		if len(fields) < 4 {
			continue
		}
		entries++
		if size, err := strconv.ParseInt(fields[3], 10, 64); err == nil && size > 0 {
			bytes += size
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 10
	}
	if bytes+entries*4096 > limit {
		fmt.Fprintf(os.Stderr, "repository too large: it checks out to %d files and %d bytes; the limit is %d bytes\n", entries, bytes, limit)
		return 11
	}
	fmt.Printf("%d %d\n", entries, bytes)
	return 0
}

// readNoFollow reads a file that must not be a symbolic link.
func readNoFollow(path string) ([]byte, error) {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		if err == syscall.ENOENT {
			return nil, os.ErrNotExist
		}
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return io.ReadAll(f)
}

// writeNew creates a file that must not exist yet (not even as a link) and writes it.
func writeNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// noLinksBetween fails if any directory from root down to dir is a symbolic link or not
// a directory.
func noLinksBetween(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("the package directory is outside the repository")
	}
	path := root
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if part == "." || part == "" {
			continue
		}
		path = filepath.Join(path, part)
		info, err := os.Lstat(path)
		if err != nil {
			if os.IsNotExist(err) {
				return fmt.Errorf("no directory %s in the repository", relTo(root, path))
			}
			return err
		}
		if !info.IsDir() {
			return fmt.Errorf("%s is not a directory", relTo(root, path))
		}
	}
	return nil
}

// checkReplaces refuses replace directives of the module's go.mod whose target is a local
// path outside the repository: a build sees only its own repository.
func checkReplaces(root, modRoot string) error {
	data, err := readNoFollow(filepath.Join(modRoot, "go.mod"))
	if err != nil {
		return err
	}
	block := false
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		switch {
		case block && line == ")":
			block = false
			continue
		case strings.HasPrefix(line, "replace") && strings.TrimSpace(strings.TrimPrefix(line, "replace")) == "(":
			block = true
			continue
		case strings.HasPrefix(line, "replace"):
			line = strings.TrimSpace(strings.TrimPrefix(line, "replace"))
		case !block:
			continue
		}
		_, target, ok := strings.Cut(line, "=>")
		if !ok {
			continue
		}
		fields := strings.Fields(target)
		if len(fields) == 0 {
			continue
		}
		path := strings.Trim(fields[0], "\"`")
		local := filepath.IsAbs(path) || path == "." || path == ".." ||
			strings.HasPrefix(path, "./") || strings.HasPrefix(path, "../")
		if !local {
			continue
		}
		resolved := path
		if !filepath.IsAbs(path) {
			resolved = filepath.Join(modRoot, path)
		}
		if rel, err := filepath.Rel(root, resolved); err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(path) {
			return fmt.Errorf("go.mod replaces a module with %s, outside the repository; a build sees only its own repository", path)
		}
	}
	return nil
}

// checkIncludes refuses assembly files that #include by absolute path or through "..":
// the Go assembler would read any file the build can see.
func checkIncludes(root string) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".s") {
			return nil
		}
		data, err := readNoFollow(path)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if !strings.HasPrefix(line, "#") {
				continue
			}
			directive := strings.TrimSpace(strings.TrimPrefix(line, "#"))
			if !strings.HasPrefix(directive, "include") {
				continue
			}
			name := strings.Trim(strings.TrimSpace(strings.TrimPrefix(directive, "include")), "\"<>")
			if filepath.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") {
				return fmt.Errorf("%s includes %q: assembly may include only files of its own package or Go's", relTo(root, path), name)
			}
		}
		return nil
	})
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
	// A vendor directory with its list is used as it is; otherwise go.mod (and go.sum) may
	// be completed from the module cache or the proxy the operator allows.
	if info, err := os.Lstat(filepath.Join(modRoot, "vendor", "modules.txt")); err == nil && info.Mode().IsRegular() {
		args = append(args, "-mod=vendor")
	} else {
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
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	if err := tmpl.Execute(f, data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
