package gitops

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// HealthStatus is what a health script returns, with the JSON names of Argo CD's health.HealthStatus.
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

type healthTests struct {
	Tests []struct {
		HealthStatus HealthStatus `json:"healthStatus"`
		InputPath    string       `json:"inputPath"`
	} `json:"tests"`
}

// The codes Argo CD accepts from a script; any other becomes Unknown.
var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// newState prepares a Lua state as Argo CD's util/lua does. openLibs: every standard library, as for the scripts
// built into Argo CD (and its own tests); otherwise only what an argocd-cm customization gets without
// resource.customizations.useOpenLibs: the base, package and table libraries and os.time and os.date.
func newState(openLibs bool) *lua.LState {
	state := lua.NewState(lua.Options{SkipOpenLibs: !openLibs})
	if openLibs {
		return state
	}
	for _, library := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, lua.OpenOs},
	} {
		state.Push(state.NewFunction(library.open))
		state.Push(lua.LString(library.name))
		state.Call(1, 0)
	}
	// Of os, only time and date; also what require("os") gives.
	full := state.GetGlobal(lua.OsLibName).(*lua.LTable)
	safe := state.NewTable()
	for _, name := range []string{"time", "date"} {
		safe.RawSetString(name, full.RawGetString(name))
	}
	state.SetGlobal(lua.OsLibName, safe)
	loaded := state.GetField(state.GetGlobal(lua.LoadLibName), "loaded").(*lua.LTable)
	loaded.RawSetString(lua.OsLibName, safe)
	return state
}

// toLua converts a decoded JSON value to Lua as Argo CD hands `obj` to a script: objects and arrays become
// tables (arrays numbered from 1), numbers Lua numbers, null nil.
func toLua(state *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case json.Number:
		return lua.LString(v)
	case []any:
		table := state.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]any:
		table := state.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetH(lua.LString(key), toLua(state, item))
		}
		return table
	}
	panic(fmt.Sprintf("no Lua value for %T", value))
}

// runHealth runs the script with `obj` set and reads its result as Argo CD does: a table, encoded to JSON and
// decoded into HealthStatus; nil is an empty status; an unknown code is Unknown.
func runHealth(script string, object map[string]any, openLibs bool) (HealthStatus, error) {
	state := newState(openLibs)
	defer state.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return HealthStatus{}, err
	}
	returned := state.Get(-1)
	switch returned.Type() {
	case lua.LTNil:
		return HealthStatus{}, nil
	case lua.LTTable:
	default:
		return HealthStatus{}, fmt.Errorf("the script returned a %s, not a table", returned.Type())
	}
	encoded, err := luajson.Encode(returned)
	if err != nil {
		return HealthStatus{}, err
	}
	var result HealthStatus
	if err := json.Unmarshal(encoded, &result); err != nil {
		return HealthStatus{}, fmt.Errorf("the script returned %s: %w", encoded, err)
	}
	if !healthCodes[result.Status] {
		return HealthStatus{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	return result, nil
}

// The library settings to run each script in: both, or with MODELDEPLOY_GITOPS_LIBS=open only the one Argo CD gives
// the checks bundled into it.
func libSettings() []bool {
	if os.Getenv("MODELDEPLOY_GITOPS_LIBS") == "open" {
		return []bool{true}
	}
	return []bool{false, true}
}

// A wildcard directory (a path component starting with _, as _.crossplane.io/_): Argo CD's harness runs each of its
// objects with the script it looks up by the object's group and kind, which may be another directory's.
func wildcard(root, dir string) bool {
	relative, _ := filepath.Rel(root, dir)
	for _, part := range strings.Split(relative, string(filepath.Separator)) {
		if strings.HasPrefix(part, "_") {
			return true
		}
	}
	return false
}

// Every health.lua under the tree, against its health_test.yaml, in both library settings.
func TestArgoCDHealth(t *testing.T) {
	root := customizations(t)
	var scripts []string
	err := filepath.WalkDir(root, func(path string, entry os.DirEntry, err error) error {
		if err == nil && entry.Name() == "health.lua" && !wildcard(root, filepath.Dir(path)) {
			scripts = append(scripts, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scripts) == 0 {
		t.Fatalf("no health.lua under %s", root)
	}
	sort.Strings(scripts)
	for _, path := range scripts {
		dir := filepath.Dir(path)
		script, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cases healthTests
		readYAML(t, filepath.Join(dir, "health_test.yaml"), &cases)
		if len(cases.Tests) == 0 {
			t.Fatalf("%s/health_test.yaml lists no tests", dir)
		}
		for _, test := range cases.Tests {
			for _, openLibs := range libSettings() {
				name := fmt.Sprintf("%s/%s/openLibs=%v", strings.TrimPrefix(dir, root+"/"), test.InputPath, openLibs)
				t.Run(name, func(t *testing.T) {
					object := readObject(t, filepath.Join(dir, test.InputPath))
					got, err := runHealth(string(script), object, openLibs)
					if err != nil {
						t.Fatal(err)
					}
					if got != test.HealthStatus {
						t.Errorf("got   %+v\nwant  %+v", got, test.HealthStatus)
					}
				})
			}
		}
	}
}

// Every captured object of the ModelDeployment is a test case.
func TestEveryModelDeploymentObjectIsTested(t *testing.T) {
	dir := modelDeploymentDir(t)
	var cases healthTests
	readYAML(t, filepath.Join(dir, "health_test.yaml"), &cases)
	listed := map[string]bool{}
	for _, test := range cases.Tests {
		listed[filepath.Clean(test.InputPath)] = true
	}
	data, err := filepath.Glob(filepath.Join(dir, "testdata", "*.yaml"))
	if err != nil || len(data) == 0 {
		t.Fatalf("no testdata in %s (%v)", dir, err)
	}
	for _, file := range data {
		if relative, _ := filepath.Rel(dir, file); !listed[relative] {
			t.Errorf("%s is in no test of health_test.yaml", file)
		}
	}
}

// The argocd-cm setting (no standard libraries) is a real restriction: a script calling string.lower fails, and
// of os only time and date are there, also through require.
func TestWhatAnArgocdCMScriptMayCall(t *testing.T) {
	script := `return {status = "Healthy", message = string.lower("X")}`
	if _, err := runHealth(script, map[string]any{}, false); err == nil {
		t.Fatal("string.lower ran without the open libraries")
	}
	for _, script := range []string{`os.exit(1)`, `require("os").exit(1)`, `io.write("x")`} {
		if _, err := runHealth(script, map[string]any{}, false); err == nil {
			t.Errorf("%s ran without the open libraries", script)
		}
	}
	got, err := runHealth(`return {status = "Healthy", message = type(require("os").time())}`, map[string]any{}, false)
	if err != nil || got.Message != "number" {
		t.Errorf("os.time through require: %+v, %v", got, err)
	}
	got, err = runHealth(script, map[string]any{}, true)
	if err != nil || got != (HealthStatus{Status: "Healthy", Message: "x"}) {
		t.Fatalf("with the open libraries: %+v, %v", got, err)
	}
}
