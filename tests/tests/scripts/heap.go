// A Go workload: fills a slice of N MiB with a known pattern, keeps eight
// goroutines busy (the runtime preempts them by signalling its threads by
// their ids), prints `tick <n> <nanoseconds> <count>` every 100 ms, and
// when the file named by its second argument appears, deletes it and
// checks every word: `verify ok` or `verify FAIL`. On SIGUSR1 it prints
// `usr1 <its pid as it sees it>`.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func pattern(i int) uint64 { return uint64(i)*0x9E3779B97F4A7C15 ^ 0x5DEECE66D }

func main() {
	mib, _ := strconv.Atoi(os.Args[1])
	trigger := os.Args[2]
	heap := make([]uint64, mib*131072)
	for i := range heap {
		heap[i] = pattern(i)
	}
	var count uint64
	for g := 0; g < 8; g++ {
		go func() {
			x := uint64(1)
			for {
				x = x*6364136223846793005 + 1442695040888963407
				if x%1024 == 0 {
					atomic.AddUint64(&count, 1)
				}
			}
		}()
	}
	usr1 := make(chan os.Signal, 4)
	signal.Notify(usr1, syscall.SIGUSR1)
	fmt.Printf("pid %d\n", os.Getpid())
	fmt.Println("ready")
	start := time.Now()
	for n := 1; ; n++ {
		select {
		case <-usr1:
			fmt.Printf("usr1 %d\n", syscall.Getpid())
		case <-time.After(100 * time.Millisecond):
		}
		fmt.Printf("tick %d %d %d\n", n, time.Since(start).Nanoseconds(), atomic.LoadUint64(&count))
		if _, err := os.Stat(trigger); err == nil {
			os.Remove(trigger)
			ok := true
			for i := range heap {
				if heap[i] != pattern(i) {
					ok = false
					break
				}
			}
			if ok {
				fmt.Println("verify ok")
			} else {
				fmt.Println("verify FAIL")
			}
		}
	}
}
