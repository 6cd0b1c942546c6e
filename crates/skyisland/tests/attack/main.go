// Command attack tries, from inside a jail, what a hostile function would try. Each
// subcommand prints what happened; the security tests judge it.
package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"
)

func errno(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := err.(syscall.Errno); ok {
		return e.Error()
	}
	return err.Error()
}

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
	case "whoami":
		host, _ := os.Hostname()
		fmt.Printf("host=%s uid=%d gid=%d pid=%d\n", host, os.Getuid(), os.Getgid(), os.Getpid())
		status, _ := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(line, "Cap") || strings.HasPrefix(line, "NoNewPrivs") || strings.HasPrefix(line, "Seccomp:") {
				fmt.Println(strings.Join(strings.Fields(line), " "))
			}
		}
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
				fmt.Printf("filled=%dMiB create: %s\n", total, errno(err))
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
	case "read":
		data, err := os.ReadFile(arg(2))
		if err != nil {
			fmt.Printf("read %s: %v\n", arg(2), err)
			return
		}
		fmt.Printf("read %s: %d bytes\n", arg(2), len(data))
	case "ls":
		entries, err := os.ReadDir(arg(2))
		if err != nil {
			fmt.Printf("ls %s: %v\n", arg(2), err)
			return
		}
		for _, e := range entries {
			fmt.Println(e.Name())
		}
	case "connect":
		conn, err := net.DialTimeout("tcp", arg(2), 2*time.Second)
		if err != nil {
			fmt.Printf("connect %s: %v\n", arg(2), err)
			return
		}
		conn.Close()
		fmt.Printf("connect %s: ok\n", arg(2))
	case "interfaces":
		ifaces, _ := net.Interfaces()
		for _, i := range ifaces {
			fmt.Printf("%s up=%v\n", i.Name, i.Flags&net.FlagUp != 0)
		}
	case "ptrace":
		pid, _ := strconv.Atoi(arg(2))
		_, _, e := syscall.Syscall(syscall.SYS_PTRACE, syscall.PTRACE_ATTACH, uintptr(pid), 0)
		fmt.Printf("ptrace %d: %s\n", pid, errno(e0(e)))
	case "mount":
		fmt.Printf("mount: %s\n", errno(syscall.Mount("none", "/tmp", "tmpfs", 0, "")))
	case "setuid":
		_, _, e := syscall.RawSyscall(syscall.SYS_SETUID, 0, 0, 0)
		fmt.Printf("setuid: %s\n", errno(e0(e)))
	case "kill":
		pid, _ := strconv.Atoi(arg(2))
		fmt.Printf("kill %d: %s\n", pid, errno(syscall.Kill(pid, syscall.SIGKILL)))
	case "mknod":
		fmt.Printf("mknod: %s\n", errno(syscall.Mknod("/tmp/sda", syscall.S_IFBLK|0o600, 8<<8)))
	case "syscalls":
		// Each of these must fail with EPERM (seccomp) or EPERM/EACCES (no capabilities).
		var params [120]byte
		for _, c := range []struct {
			name string
			nr   uintptr
			args [3]uintptr
		}{
			{"io_uring_setup", 425, [3]uintptr{8, uintptr(unsafe.Pointer(&params[0])), 0}},
			{"unshare_user", syscall.SYS_UNSHARE, [3]uintptr{syscall.CLONE_NEWUSER, 0, 0}},
			{"unshare_net", syscall.SYS_UNSHARE, [3]uintptr{syscall.CLONE_NEWNET, 0, 0}},
			{"keyctl", 250, [3]uintptr{0, 0, 0}},
			{"bpf", 321, [3]uintptr{0, 0, 0}},
			{"perf_event_open", 298, [3]uintptr{0, 0, 0}},
			{"kexec_load", 246, [3]uintptr{0, 0, 0}},
			{"init_module", 175, [3]uintptr{0, 0, 0}},
			{"reboot", 169, [3]uintptr{0xfee1dead, 672274793, 0x1234567}},
			{"setns", 308, [3]uintptr{0, 0, 0}},
			{"clone_newpid", syscall.SYS_CLONE, [3]uintptr{syscall.CLONE_NEWPID | uintptr(syscall.SIGCHLD), 0, 0}},
			{"clone3", 435, [3]uintptr{0, 0, 0}},
			{"userfaultfd", 323, [3]uintptr{0, 0, 0}},
		} {
			r, _, e := syscall.RawSyscall(c.nr, c.args[0], c.args[1], c.args[2])
			if e == 0 && c.name == "clone_newpid" && r == 0 {
				os.Exit(0) // a child: must never happen
			}
			fmt.Printf("%s: %s\n", c.name, errno(e0(e)))
		}
	case "flood":
		line := strings.Repeat("x", 4095) + "\n"
		for {
			os.Stdout.WriteString(line)
		}
	case "stderr":
		fmt.Fprint(os.Stderr, arg(2))
		os.Exit(3)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}

// e0 turns a zero Errno into a nil error.
func e0(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}
