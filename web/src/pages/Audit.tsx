export function AuditPage() {
  return (
    <section className="page">
      <h1>Audit</h1>
    </section>
  );
}
