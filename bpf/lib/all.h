/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * all.h - what every program file includes. bcc only takes functions written in
 * its main file as programs, so the loader concatenates the program files into
 * one unit; include guards keep these headers single.
 */
#ifndef DP_ALL_H
#define DP_ALL_H
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/local.h"
#include "lib/stats.h"
#include "lib/monitor.h"
#include "lib/parse.h"
#include "lib/fdb.h"
#include "lib/icmp.h"
#include "lib/encap.h"
#include "lib/router.h"
#include "lib/flood.h"
#include "lib/punt.h"
#include "lib/arp.h"
#include "lib/probe.h"
#endif
