/* __NAME__: a Portcullis tenant plugin in C (plugin ABI v1). Build: ./build.sh
 *
 * The rule (a starting point, edit it): reads apply as granted; any other action applies only
 * with a maintenance ticket (context.ticket, "MW-" and digits) inside the UTC window
 * 22:00-06:00; otherwise the plugin abstains with a reason. A malformed ticket vetoes. */
#include "portcullis.h"

static int valid_ticket(pc_str t) {
    if (t.len <= 3 || t.len > 11 || t.ptr[0] != 'M' || t.ptr[1] != 'W' || t.ptr[2] != '-') return 0;
    for (u32 i = 3; i < t.len; i++) if (t.ptr[i] < '0' || t.ptr[i] > '9') return 0;
    return 1;
}

int evaluate(const pc_input *in) {
    if (pc_eq(pc_field(in, PC_VERB), "read")) return PC_ALLOW;
    int found;
    pc_str ticket = pc_context(in, "ticket", &found);
    if (!found) {
        pc_reason("no maintenance ticket (context.ticket: MW-nnnn)");
        return PC_ABSTAIN;
    }
    if (!valid_ticket(ticket)) {
        pc_reason("malformed maintenance ticket");
        return PC_DENY;
    }
    int h = pc_hour(pc_now(in));
    if (!(h >= 22 || h < 6)) {
        pc_reason("outside the maintenance window (22:00-06:00 UTC)");
        return PC_ABSTAIN;
    }
    return PC_ALLOW;
}
