export function TaskPage() {
  return (
    <section className="page">
      <h1>Task</h1>
    </section>
  );
}
