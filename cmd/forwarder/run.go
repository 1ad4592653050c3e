package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
)

// binaryName prefixes the error lines the forwarder prints.
const binaryName = "tether-forwarder"

// stopTimeout bounds a graceful stop; the DaemonSet's grace period is
// longer (20 s).
const stopTimeout = 10 * time.Second

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1 // could not start: listener in use, etcd unreachable, TLS files
	exitConfig = 2 // the configuration cannot be read
)

// run is the daemon: it reads the configuration from the environment and
// args, starts, serves until SIGTERM or SIGINT (or until ctx ends), stops
// gracefully and returns the exit code. Errors that prevent it from
// starting are one line on stderr that names the setting.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := loadConfig(args)
	switch {
	case errors.Is(err, errHelp):
		if err := printUsage(stdout); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", binaryName, err)
			return exitFailed
		}
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "%s: %s\n", binaryName, oneLine(err))
		return exitConfig
	}
	log := newLogger(cfg, stderr)
	for _, name := range unknownSettings(os.Environ()) {
		log.WithField("variable", name).Warn("not a setting of " + binaryName + "; ignored (see --help)")
	}

	// Signals are caught before anything starts, so that a SIGTERM during
	// the start stops the forwarder once it has started, rather than
	// killing it half-way.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	d, err := start(ctx, cfg, log, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", binaryName, oneLine(err))
		return exitFailed
	}
	for {
		select {
		case <-ctx.Done():
			return d.stop(ctx, "the context ended")
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				log.SetLevel(logrus.DebugLevel)
				log.WithField("signal", "SIGUSR1").Info("log level raised to debug: the chain logs what each element changes")
			case syscall.SIGUSR2:
				// Restore first, then say so: a line logged after this one
				// is logged at the restored level.
				log.SetLevel(logrus.Level(cfg.LogLevel))
				log.WithFields(logrus.Fields{"signal": "SIGUSR2", "level": cfg.LogLevel.String()}).Info("log level restored")
			default:
				return d.stop(ctx, unixSignalName(sig))
			}
		}
	}
}

// newLogger returns the forwarder's logger, writing to w.
func newLogger(cfg Config, w io.Writer) *logrus.Logger {
	log := logrus.New()
	log.SetOutput(w)
	log.SetLevel(logrus.Level(cfg.LogLevel))
	if cfg.LogFormat == "json" {
		log.SetFormatter(&logrus.JSONFormatter{})
	} else {
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	}
	return log
}

// oneLine makes err fit on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func unixSignalName(sig os.Signal) string {
	switch sig {
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGINT:
		return "SIGINT"
	}
	return sig.String()
}
