// The trainer's view: their students (assigned to them, or of their track with
// no trainer yet: services/students.py's one rule, as GET /api/users/my-students/)
// with their workspace state, read-only (see the README's "Admin console").
import { api } from "./api.js";
import { consoleCard, enrolment, PagedTable, query, searchForm, statePill, when } from "./console.js";
import { h } from "./dom.js";

export function trainerConsole() {
  const filters = { q: "" };
  const table = new PagedTable({
    caption: "Your students", empty: "No student yet.",
    load: (page) => api(`/api/trainer/students/${query({ ...filters, page, page_size: 10 })}`),
    columns: [
      { label: "Name", cell: (s) => s.name },
      { label: "Email", cell: (s) => s.email },
      { label: "Trainer", cell: (s) => (s.trainer_id ? "Assigned" : "None yet (your track)") },
      { label: "Enrolment", cell: (s) => enrolment(s.enrollment_status) },
      { label: "Workspace", cell: (s) => statePill(s.workspace_state) },
      { label: "Since", cell: (s) => when(s.workspace_since) },
      { label: "Last login", cell: (s) => when(s.last_login) },
    ],
  });
  const search = searchForm("Search students", "student-q");
  search.addEventListener("submit", (event) => {
    event.preventDefault();
    filters.q = search.elements.q.value.trim();
    table.show(1);
  });
  const { card } = consoleCard("students", "Your students", h("p", { class: "hint" },
    "Read-only: the students assigned to you, and those of your track who have no trainer yet, with the "
    + "state of their workspaces."), search, table.element);
  table.show(1);
  return card;
}
