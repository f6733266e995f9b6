// The dashboard's HTML, rendered on the server: every page shows real values on its first paint,
// without JavaScript; the scripts in server/dashboard/ then follow the event streams and swap in
// the fragments below (rendered here too, so a value looks the same before and after an update).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "server/dashboard_data.h"

namespace qlorad::server {

// Escapes text for HTML element content and quoted attribute values.
std::string HtmlEscape(std::string_view text);

// Formats shared with the scripts (server/dashboard/common.js has their twins).
std::string FormatLoss(double loss);         // "2.3412"
std::string FormatDuration(double seconds);  // "0:35", "1:02:03"
std::string FormatBytes(int64_t bytes);      // "512 B", "1.50 GiB"
std::string FormatUtcTime(int64_t unix_ms);  // "2026-12-06 23:08:41 UTC"

// Pages.
std::string JobsPageHtml(const std::vector<JobRow>& jobs);
// `csrf`: the browser's token (auth_http.h), which the cancel button's script sends back.
std::string JobPageHtml(const JobDetail& detail, const std::string& csrf);
std::string WorkersPageHtml(const std::vector<WorkerView>& workers);
std::string ErrorPageHtml(int http_status, const std::string& message);
// The sign-in form with `csrf` in its hidden field; `error` from a failed try.
std::string LoginPageHtml(const std::string& error, const std::string& csrf);

// Fragments the streams send.
std::string JobRowHtml(const JobRow& row);                           // one <tr> of the jobs table
std::string JobSummaryHtml(const JobRow& row);                       // the job page's summary <dl>
std::string WorkerRowsHtml(const std::vector<WorkerView>& workers);  // the workers <tbody> rows
std::string LogLineHtml(const v1::LogLine& line);    // one line of the job page's log
std::string EventItemHtml(const v1::LogLine& line);  // one <li> of its events (EventKind set)

}  // namespace qlorad::server
