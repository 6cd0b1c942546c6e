// Command attack tries, from inside a jail, what a hostile function would try. Each
// subcommand prints what happened; the security tests judge it.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"skyisland.test/hostile"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: attack COMMAND [ARGS]")
		os.Exit(2)
	}
	arg := func(i int) string {
		if len(os.Args) > i {
			return os.Args[i]
		}
		return ""
	}
	switch os.Args[1] {
	case "exit":
		code, _ := strconv.Atoi(arg(2))
		fmt.Print("bye")
		os.Exit(code)
	case "sleep":
		d, _ := time.ParseDuration(arg(2))
		time.Sleep(d)
		fmt.Println("slept")
	case "spin":
		for {
		}
	case "forkbomb":
		// Start sleepers until the pids limit refuses, then report.
		started := 0
		var lastErr error
		for i := 0; i < 100000; i++ {
			cmd := exec.Command("/proc/self/exe", "sleep", "30s")
			if err := cmd.Start(); err != nil {
				lastErr = err
				break
			}
			started++
		}
		fmt.Printf("started=%d error=%v\n", started, lastErr)
	case "membomb":
		var keep [][]byte
		for i := 1; ; i++ {
			b := make([]byte, 8<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
			fmt.Printf("allocated %d MiB\n", i*8)
		}
	case "diskfill":
		total := 0
		buf := make([]byte, 1<<20)
		for i := 0; ; i++ {
			f, err := os.Create(fmt.Sprintf("/tmp/fill-%d", i))
			if err != nil {
				fmt.Printf("filled=%dMiB create: %s\n", total, hostile.Errno(err))
				return
			}
			for j := 0; j < 16; j++ {
				if _, err := f.Write(buf); err != nil {
					fmt.Printf("filled=%dMiB write: %v\n", total, err)
					return
				}
				total++
			}
			f.Close()
		}
	default:
		// The attempts a function can make as well: shared with the security tests'
		// function (tests/fixtures/hostile).
		fmt.Print(hostile.Run(os.Args[1], arg(2)))
	case "flood":
		line := strings.Repeat("x", 4095) + "\n"
		for {
			os.Stdout.WriteString(line)
		}
	case "stderr":
		fmt.Fprint(os.Stderr, arg(2))
		os.Exit(3)
	}
}
